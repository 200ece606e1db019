// SIGINT / SIGTERM for a long run: the first signal asks the run to stop at the next safe point
// (between batches, between heads), which unwinds and removes temporary files; if the run has
// not stopped within a second (a forward pass in progress), a watchdog removes the pending
// temporary files and ends the process. Either way no output file that looks complete is left.
#pragma once

#include <stdexcept>

namespace qkscope::cli {

// Thrown at a safe point after a signal.
class Interrupted : public std::runtime_error {
 public:
  explicit Interrupted(const char* signal_name);
};

// Installs the handlers and starts the watchdog. Call once, early in main.
void install_interrupt_handlers();

// How long the watchdog lets a signalled run stop on its own (default 1 s); a run that writes a
// checkpoint on a signal needs the rest of a forward plus the write.
void set_interrupt_grace(int milliseconds);

// Throws Interrupted if a signal arrived.
void throw_if_interrupted();

}  // namespace qkscope::cli
