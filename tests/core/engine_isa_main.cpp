// main() of qkscope_engine_isa_tests: `--isa=NAME` runs every test with that variant of the
// engine (exit code 77, which ctest reports as skipped, when this CPU cannot run it).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "engine_isa.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--isa=", 6) != 0) continue;
    const char* name = argv[i] + 6;
    bool found = false;
    for (qkscope::detail::Isa isa : qkscope::detail::supported_isas())
      if (std::strcmp(name, qkscope::detail::isa_name(isa)) == 0) {
        qkscope::detail::set_active_isa(isa);
        found = true;
      }
    if (!found) {
      std::printf("skipped: this CPU (or build) cannot run the %s variant\n", name);
      return 77;
    }
    std::printf("engine variant: %s\n", name);
  }
  return RUN_ALL_TESTS();
}
