// Running the capture program from tests: argv in, exit status and stderr out.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace qkscope::testing {

struct CliResult {
  int status = -1;
  std::string out, err;
};

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `capture <args>` (args are shell words) and collects its exit status, stdout and stderr.
inline CliResult run_capture(const std::string& args) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path();
  const fs::path out = dir / ("qkscope_cli_out_" + std::to_string(::getpid()));
  const fs::path err = dir / ("qkscope_cli_err_" + std::to_string(::getpid()));
  const std::string cmd = std::string(QKSCOPE_CAPTURE_EXE) + " " + args + " >" + out.string() +
                          " 2>" + err.string() + " </dev/null";
  const int raw = std::system(cmd.c_str());
  CliResult r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

inline std::filesystem::path fresh_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::remove_all(dir);
  return dir;
}

inline std::filesystem::path write_file(const std::string& name, const std::string& content) {
  auto path = std::filesystem::temp_directory_path() / name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

}  // namespace qkscope::testing
