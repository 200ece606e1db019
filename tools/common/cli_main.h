// The main() of qkscope's server programs: one line on stderr per error and the exit status of
// tools/capture (0 success, 2 usage error, 1 anything else). Header-only (CLI11 is the
// programs').
#pragma once

#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>
#include <string>

#include "qkscope/error.h"

namespace qkscope::tools {

// The first line of an error message ("unknown error" when empty).
inline std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "unknown error" : line;
}

// Parses argv into `app`'s options. False when --help was asked for (the help is printed on
// stdout); a parse error is thrown as UsageError.
inline bool parse_or_help(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return false;
  } catch (const CLI::ParseError& e) {
    throw UsageError(e.what());
  }
  return true;
}

// main() of a program whose `parse(argc, argv)` returns its options (nullopt: --help was
// printed, exit 0) and whose `run(options)` returns the exit status. What they throw becomes
// the one-line message and status: UsageError -> "<name>: <reason> (see <name> --help)", 2;
// any other std::exception -> "<name>: error: <reason>", 1.
template <typename Parse, typename Run>
int cli_main(const char* name, int argc, char** argv, Parse&& parse, Run&& run) {
  try {
    const auto options = parse(argc, argv);
    return options ? run(*options) : 0;
  } catch (const UsageError& e) {
    std::cerr << name << ": " << first_line(e.what()) << " (see " << name << " --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << name << ": error: " << first_line(e.what()) << "\n";
    return 1;
  }
}

}  // namespace qkscope::tools
