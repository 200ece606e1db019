// Errors of qkscope: every failure is an exception whose message says what was expected,
// what arrived and where. Libraries never exit and never print.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace qkscope {

// Any failure caused by input the library was given (files, options, tensors).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A bad option or argument value (the CLI maps it to exit status 2).
class UsageError : public Error {
 public:
  using Error::Error;
};

// A file that breaks its format's rules (the message names the rule).
class FormatError : public Error {
 public:
  using Error::Error;
};

// A broken internal invariant: a bug in qkscope, not in the input.
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace qkscope

// User-facing check: throws `kind` with a formatted message when `cond` is false.
#define QKSCOPE_CHECK_AS(kind, cond, ...)                  \
  do {                                                     \
    if (!(cond)) throw kind(fmt::format(__VA_ARGS__));     \
  } while (false)
#define QKSCOPE_CHECK(cond, ...) QKSCOPE_CHECK_AS(::qkscope::Error, cond, __VA_ARGS__)

// Invariant check: throws InternalError naming the source line.
#define QKSCOPE_ASSERT(cond)                                                              \
  do {                                                                                    \
    if (!(cond))                                                                          \
      throw ::qkscope::InternalError(                                                     \
          fmt::format("qkscope internal error: {} failed at {}:{}", #cond, __FILE__, __LINE__)); \
  } while (false)
