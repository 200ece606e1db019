// CaptureGate, for servers that capture into a store they also take tables from: lets many
// captured forwards in at once, or one take (drain) of the store, never both. A drain waiting
// for the forwards in flight closes the gate to new ones, so a busy server cannot starve it (a
// reader-preferring std::shared_mutex could). Used by tools/server_example and tools/http_server.
#pragma once

#include <condition_variable>
#include <mutex>

namespace qkscope {

class CaptureGate {
 public:
  // Held by a captured forward for its whole duration.
  class Pass {
   public:
    explicit Pass(CaptureGate& gate) : gate_(gate) {
      std::unique_lock<std::mutex> lock(gate_.mutex_);
      gate_.cv_.wait(lock, [&] { return !gate_.draining_; });
      ++gate_.in_flight_;
    }
    ~Pass() {
      std::lock_guard<std::mutex> lock(gate_.mutex_);
      if (--gate_.in_flight_ == 0) gate_.cv_.notify_all();
    }
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;

   private:
    CaptureGate& gate_;
  };

  // Runs `f` with no captured forward in flight; one drain at a time.
  template <typename F>
  auto drain(F&& f) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return !draining_; });
      draining_ = true;
      cv_.wait(lock, [&] { return in_flight_ == 0; });
    }
    struct Reopen {  // also when f throws
      CaptureGate& gate;
      ~Reopen() {
        std::lock_guard<std::mutex> lock(gate.mutex_);
        gate.draining_ = false;
        gate.cv_.notify_all();
      }
    } reopen{*this};
    return f();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int in_flight_ = 0;
  bool draining_ = false;
};

}  // namespace qkscope
