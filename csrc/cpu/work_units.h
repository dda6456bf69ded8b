// Independent work units run by the calling thread, helped by torch's inter-op thread pool, without
// ever waiting for a helper to get a core.
//
// at::parallel_for (OpenMP in torch's builds) forks a team and joins it at a barrier, so a call lasts
// until its slowest member has run: when other processes keep the cores busy (DataLoader workers in
// training), a member that is not scheduled holds the whole call (the 2-thread loss at B = 256
// measured 15.9 ms against 2.0 ms on one thread with two busy processes). Here the calling thread
// claims units from an atomic counter, and helpers queued on the inter-op pool (at::launch) claim from
// the same counter when they get to run; a helper that starts late finds nothing left and returns.
// The caller waits only for units a helper has claimed and is running, never for a helper to start.
// Idle pool threads sleep (no spinning that would take a core from another process). And no helper
// is woken when the machine has no idle core (idle_cores): a helper preempted in the middle of a
// unit would still hold the caller up.
//
// Which thread runs a unit varies; results do not, as long as each unit writes its own outputs (the
// loss kernels reduce per-unit partial sums in unit order).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace bfdkern::cpu {

// Cores of the machine that no runnable task is using, the caller not counted as using one: online
// CPUs minus the tasks running or runnable now (the 4th field of /proc/loadavg, which counts the
// caller), read at most every 10 ms. Where that file cannot be read (not Linux), every other core
// counts as idle. $BFDKERN_CPU_IDLE_CORES, read once, replaces the measurement (tests use it to run
// the helpers on a busy machine).
inline int64_t idle_cores() {
  static const int64_t forced = [] {  // $BFDKERN_CPU_IDLE_CORES: a fixed answer, for tests
    const char* value = std::getenv("BFDKERN_CPU_IDLE_CORES");
    return value != nullptr && *value != '\0' ? std::max<int64_t>(0, std::atoll(value)) : int64_t{-1};
  }();
  if (forced >= 0) return forced;
  static std::atomic<int64_t> cached{-1};
  static std::atomic<int64_t> read_at{0};
  const int64_t cpus = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
  if (cached.load(std::memory_order_relaxed) >= 0 && now - read_at.load(std::memory_order_relaxed) < 10)
    return cached.load(std::memory_order_relaxed);
  int64_t idle = cpus - 1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    double avg1, avg5, avg15;
    long running = 0, total = 0;
    if (std::fscanf(f, "%lf %lf %lf %ld/%ld", &avg1, &avg5, &avg15, &running, &total) == 5)
      idle = std::clamp<int64_t>(cpus - running, 0, cpus - 1);
    std::fclose(f);
  }
  cached.store(idle, std::memory_order_relaxed);
  read_at.store(now, std::memory_order_relaxed);
  return idle;
}

// Runs body(u) for u in [0, num_units) on the calling thread and up to `helpers` inter-op pool threads
// (fewer when the machine has fewer idle cores).
template <typename F>
void run_units_helped(int64_t num_units, int64_t helpers, const F& body) {
  helpers = std::min<int64_t>(helpers, num_units - 1);
  if (helpers > 0) helpers = std::min(helpers, idle_cores());
  if (helpers <= 0 || at::in_parallel_region()) {
    for (int64_t u = 0; u < num_units; ++u) body(u);
    return;
  }
  // Shared with the helpers, which may start after this call returned: they then only read `next`.
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    int64_t total = 0;
    std::function<void(int64_t)> body;  // called only for claimed units, all finished before we return
    std::mutex error_mutex;
    std::exception_ptr error;
  };
  auto state = std::make_shared<State>();
  state->total = num_units;
  state->body = [&body](int64_t u) { body(u); };
  const auto work = [](State& s) {
    for (int64_t u = s.next.fetch_add(1, std::memory_order_relaxed); u < s.total;
         u = s.next.fetch_add(1, std::memory_order_relaxed)) {
      try {
        s.body(u);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(s.error_mutex);
        if (!s.error) s.error = std::current_exception();
      }
      s.done.fetch_add(1, std::memory_order_release);  // publishes the unit's writes
    }
  };
  for (int64_t h = 0; h < helpers; ++h) at::launch([state, work] { work(*state); });
  work(*state);
  while (state->done.load(std::memory_order_acquire) < num_units) std::this_thread::yield();
  if (state->error) std::rethrow_exception(state->error);
}

}  // namespace bfdkern::cpu
