#!/usr/bin/python3
"""bench/cluster_dask.py: the baseline of bench/cluster.lua, on dask.distributed.

    /usr/bin/python3 bench/cluster_dask.py [scale [dask_scale [variants]]]

A LocalCluster(n_workers=2, threads_per_worker=1, processes=True) on this
machine (the scheduler runs in this process, as fflua's head runs beside the
driver), warmed up by one task; then the same two measures as
bench/cluster.lua:

  independent  N = 100,000 * scale trivial tasks inc(i), reduced to one
               number by a final task on the cluster (fflua's shape: N
               nodes gathered by one). Three variants, each timed from the
               first submission to the result in this process:
                 map+sum      futures = client.map(inc, range(N)),
                              client.submit(sum, futures).result()
                 map+gather   client.gather(client.map(inc, range(N))), then
                              sum here (the results travel to the client)
                 delayed      dask.delayed(sum)([delayed(inc)(i) ...]) with
                              client.compute(...).result() (the graph is
                              built first; its build time is printed apart)
               The fastest is the baseline (the honest best dask offers).
  chain        M = 10,000 * scale dependent tasks x = client.submit(inc, x),
               wall time per step from the first submit to x.result().

dask_scale (default: scale) multiplies dask's counts instead of scale, for
a shorter run; rates are per task, so they compare across counts (dask's
per-task cost does not fall with N). variants (default: all) is a comma
list of map+sum, map+gather, delayed, chain: only those run.

Prints a human table, then one machine-readable line per measure:
    RESULT <key> <value>
which bench/cluster.lua reads. Exit status 3 with a line
    dask.distributed not available: <reason>
when the import fails.
"""
import os
import sys
import time

scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
dask_scale = float(sys.argv[2]) if len(sys.argv) > 2 else scale
VARIANTS = ("map+sum", "map+gather", "delayed", "chain")
only = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else set(VARIANTS)
if not only <= set(VARIANTS):
    sys.exit("variants: a comma list of " + ", ".join(VARIANTS))
if scale <= 0 or dask_scale <= 0:
    sys.exit("usage: cluster_dask.py [scale > 0 [dask_scale > 0]]")


def count(n):
    return max(1, int(n * dask_scale + 0.5))


try:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    import dask
    import distributed
    from distributed import Client, LocalCluster
except Exception as e:  # noqa: BLE001 - any reason counts
    print("dask.distributed not available: %s: %s" % (type(e).__name__, e))
    sys.stdout.flush()
    sys.exit(3)


def inc(i):
    return i + 1


def total(xs):
    return sum(xs)


now = time.monotonic


def result(key, value):
    print("RESULT %s %.9g" % (key, value))


def main():
    # Quiet: no dashboard, no per-task logging.
    for name in ("distributed", "distributed.worker", "distributed.scheduler",
                 "distributed.nanny", "distributed.core", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    print("dask %s, distributed %s, python %s" % (
        dask.__version__, distributed.__version__, sys.version.split()[0]))
    t0 = now()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    client.wait_for_workers(2)
    assert client.submit(inc, 1, pure=False).result() == 2  # warm up: ships inc
    t1 = now()
    print("cluster start + warm-up: %.2f s" % (t1 - t0))
    result("start_s", t1 - t0)
    sys.stdout.flush()

    n = count(100000)
    expect = sum(range(1, n + 1))

    def timed_indep(name, run, note=""):
        t0 = now()
        s = run()
        t1 = now()
        assert s == expect, (name, s, expect)
        rate = n / (t1 - t0)
        print("  %-12s %9.2f s  %10.0f tasks/s  %8.1f us/task%s" % (name, t1 - t0, rate,
                                                                  1e6 / rate, note))
        sys.stdout.flush()
        return rate

    rates = {}
    if only & {"map+sum", "map+gather", "delayed"}:
        print("independent: N = %d tasks inc(i), reduced by one more" % n)
    if "map+sum" in only:  # reduced on the cluster, as fflua's gather node
        def map_sum():
            futs = client.map(inc, range(n), key=["s-%d" % i for i in range(n)])
            return client.submit(total, futs, key="s-total").result()
        rates["map+sum"] = timed_indep("map+sum", map_sum)
    if "map+gather" in only:  # the results travel to the client, summed here
        def map_gather():
            futs = client.map(inc, range(n), key=["g-%d" % i for i in range(n)])
            return sum(client.gather(futs))
        rates["map+gather"] = timed_indep("map+gather", map_gather)
    if "delayed" in only:  # a dask.delayed graph, built first (not timed)
        b0 = now()
        parts = [dask.delayed(inc, pure=True)(i, dask_key_name="d-%d" % i) for i in range(n)]
        tot = dask.delayed(total)(parts, dask_key_name="d-total")
        b1 = now()
        rates["delayed"] = timed_indep("delayed", lambda: client.compute(tot).result(),
                                       "  (graph built in %.2f s, apart)" % (b1 - b0))
        del parts, tot
    if rates:
        best = max(rates, key=rates.get)
        print("  fastest: %s" % best)
        result("indep_n", n)
        result("indep_rate", rates[best])

    if "chain" in only:
        m = count(10000)
        print("chain: M = %d dependent tasks x = client.submit(inc, x)" % m)
        t0 = now()
        x = client.submit(inc, 0, key="c-1")
        for k in range(2, m + 1):
            x = client.submit(inc, x, key="c-%d" % k)
        v = x.result()
        t1 = now()
        assert v == m, (v, m)
        us = (t1 - t0) / m * 1e6
        print("  %-12s %9.2f s  %10.1f us/step" % ("submit", t1 - t0, us))
        result("chain_n", m)
        result("chain_us", us)
        sys.stdout.flush()
        del x
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of the cluster's threads
