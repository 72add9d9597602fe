// lasp CPU test suite: host backend, reference, schedules, validation, communicators.
// Plain C++17 (no CUDA); run with `lasp_tests_cpu` (doctest options: -tc="*tails*", -ltc, -s).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
