// WorkerPool: the inference workers of the HTTP server and their bounded queue. Torch-free.
//
// Why a pool of its own rather than running forwards on the HTTP threads: the number of
// forwards at once stays fixed (the cores are for the model, not for however many clients are
// connected), the queue in front of them is bounded and a request past the bound is refused at
// once (503) instead of piling up, and a request that waited too long in the queue is refused
// instead of being run for a client that has likely given up.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qkscope::http {

class WorkerPool {
 public:
  using Clock = std::chrono::steady_clock;
  // A job is called once, on a worker, with the time it waited in the queue and whether that
  // was past the pool's limit (then it should only report the refusal, not run). Jobs must not
  // throw (the server's jobs hand their errors to a promise).
  using Job = std::function<void(Clock::duration waited, bool expired)>;

  // `threads` >= 1 workers; at most `max_queue` jobs wait (running ones do not count);
  // a job that waited longer than `max_wait` is called with expired = true.
  WorkerPool(int threads, size_t max_queue, Clock::duration max_wait)
      : max_queue_(max_queue), max_wait_(max_wait) {
    workers_.reserve(static_cast<size_t>(threads));
    for (int t = 0; t < threads; ++t) workers_.emplace_back([this] { work(); });
  }
  ~WorkerPool() { shutdown(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `job`; false (and the job is dropped) when the queue is full or the pool shut down.
  bool submit(Job job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_ || queue_.size() >= max_queue_ + idle_) return false;
      queue_.push_back({Clock::now(), std::move(job)});
    }
    cv_.notify_one();
    return true;
  }

  // Runs what is queued, then joins the workers. Idempotent.
  void shutdown() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_ && workers_.empty()) return;
      stopping_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

  size_t queued() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size();
  }
  size_t running() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return running_;
  }
  size_t max_queue() const { return max_queue_; }

 private:
  struct Entry {
    Clock::time_point queued_at;
    Job job;
  };

  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      ++idle_;  // an idle worker takes a job at once: it does not count against the queue bound
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      --idle_;
      if (queue_.empty()) return;  // stopping, and nothing left
      Entry e = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
      lock.unlock();
      const Clock::duration waited = Clock::now() - e.queued_at;
      e.job(waited, waited > max_wait_);
      e.job = nullptr;  // release what the job holds before taking the next
      lock.lock();
      --running_;
    }
  }

  const size_t max_queue_;
  const Clock::duration max_wait_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Entry> queue_;
  size_t idle_ = 0, running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace qkscope::http
