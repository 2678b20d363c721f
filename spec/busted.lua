-- Runs busted inside the fflua under test (ctest passes this build's binary),
-- so specs that require "functionfuse" in-process exercise this build.
require "busted.runner" { standalone = false }
