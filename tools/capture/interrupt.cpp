#include "interrupt.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include "qkscope/atomic_file.h"

namespace qkscope::cli {
namespace {

std::atomic<int> g_signal{0};
std::atomic<int> g_grace_ms{900};

extern "C" void on_signal(int signal) { g_signal.store(signal); }

const char* name_of(int signal) { return signal == SIGTERM ? "SIGTERM" : "SIGINT"; }

// Waits for a signal, then gives the run one second to stop on its own.
void watchdog() {
  while (g_signal.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(g_grace_ms.load()));
  remove_pending_temporary_files();
  std::fprintf(stderr, "\ncapture: interrupted (%s); no output written\n", name_of(g_signal.load()));
  std::_Exit(1);
}

}  // namespace

Interrupted::Interrupted(const char* signal_name)
    : std::runtime_error(std::string("interrupted (") + signal_name + "); no output written") {}

void install_interrupt_handlers() {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::thread(watchdog).detach();
}

void set_interrupt_grace(int milliseconds) { g_grace_ms.store(milliseconds); }

void throw_if_interrupted() {
  if (int s = g_signal.load()) throw Interrupted(name_of(s));
}

}  // namespace qkscope::cli
