//! Root-only tests against a real IPVS kernel; run them with scripts/vm-test.
