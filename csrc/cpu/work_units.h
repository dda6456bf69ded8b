// Independent work units run by the calling thread and helpers, on cores that other processes leave idle.
//
// at::parallel_for (OpenMP in torch's builds) forks a team and joins it at a barrier, so a call lasts
// until its slowest member has run: when other processes keep the cores busy (DataLoader workers in
// training), a member that is not scheduled holds the whole call (the 2-thread loss at B = 256
// measured 15.9 ms against 2.0 ms on one thread with two busy processes). And ATen gives its `omp
// parallel` no thread count: the team always has torch's full intra-op thread count of members. So:
// - every core idle but the caller's (idle_cores): torch's intra-op team. Right after any parallel aten
//   op (a clone, an add in autograd) its OpenMP workers spin for a while, so a member picks the work up
//   at once (an inter-op helper would wait for that spinning worker's core: `loss.backward()` at
//   B = 1024 on 2 idle cores took 11.9 ms that way against 8 ms on the team);
// - some cores busy: helpers queued on the inter-op pool (at::launch), no more than the idle cores. The
//   caller claims units from an atomic counter and a helper claims from the same counter when it gets
//   to run; one that starts late finds nothing left. The caller waits only for units a helper has
//   claimed and is running, never for a helper to start;
// - no idle core: the caller alone.
// Members and helpers claim units from a counter, so the units spread by speed, not by a fixed split.
// Which thread runs a unit varies; results do not, as long as each unit writes its own outputs (the
// loss kernels reduce per-unit partial sums in unit order).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#ifdef __linux__
#include <dirent.h>
#endif

namespace bfdkern::cpu {

// Threads of this process that are running or runnable now (state R in /proc/self/task/*/stat), the
// caller included; -1 where that cannot be read.
inline int64_t own_running_threads() {
#ifdef __linux__
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int64_t running = 0;
  char path[320], line[512];  // d_name holds at most 255 bytes
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    std::snprintf(path, sizeof(path), "/proc/self/task/%s/stat", entry->d_name);
    FILE* f = std::fopen(path, "r");
    if (f == nullptr) continue;  // the thread ended since readdir
    const size_t n = std::fread(line, 1, sizeof(line) - 1, f);
    std::fclose(f);
    line[n] = '\0';
    // "tid (comm) S ...": the state follows the last ')' (a thread name may hold parentheses).
    const char* close = std::strrchr(line, ')');
    if (close != nullptr && close[1] == ' ' && close[2] == 'R') ++running;
  }
  closedir(dir);
  return running;
#else
  return -1;
#endif
}

// Cores of the machine that other processes leave idle, the caller not counted as using one: online
// CPUs minus the tasks of other processes running or runnable (the 4th field of /proc/loadavg less this
// process's own running threads, smoothed over reads), minus the caller's core; read at most every 10 ms.
// This process's own threads are left out because torch's OpenMP workers spin for a while after each
// parallel aten op (a clone, an add in autograd): counted as load they would keep the helpers off an
// idle machine, and they yield their core soon. Where /proc cannot be read (not Linux), every other
// core counts as idle. $BFDKERN_CPU_IDLE_CORES, read once, replaces the measurement (tests use it to
// run the helpers on a busy machine).
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
    const bool read = std::fscanf(f, "%lf %lf %lf %ld/%ld", &avg1, &avg5, &avg15, &running, &total) == 5;
    std::fclose(f);
    if (read) {
      int64_t others = running - 1;  // `running` counts the caller
      // Only when others seem to run is it worth telling this process's threads apart (one small read a
      // thread): where the caller is the only one of them running, the two counts agree.
      const int64_t own = others > 0 ? own_running_threads() : -1;
      if (own >= 1) others = running - own;
      // A snapshot catches passing tasks too (a kernel worker, a daemon's tick): the count is smoothed over
      // reads (halving the old weight each read), so a task seen once does not take a core away, while a
      // steady load counts fully at the second read (two busy processes: at the first).
      static std::atomic<double> smoothed{0.0};
      const double mean = 0.5 * smoothed.load(std::memory_order_relaxed) + 0.5 * std::max<int64_t>(others, 0);
      smoothed.store(mean, std::memory_order_relaxed);
      idle = std::clamp<int64_t>(cpus - 1 - static_cast<int64_t>(std::floor(mean + 0.4)), 0, cpus - 1);
    }
  }
  cached.store(idle, std::memory_order_relaxed);
  read_at.store(now, std::memory_order_relaxed);
  return idle;
}

// Runs body(u) for u in [0, num_units) on torch's intra-op team, all of whose members claim units.
template <typename F>
void run_units_on_team(int64_t num_units, const F& body) {
  std::atomic<int64_t> next{0};
  // One slot per member (grain 1). at::parallel_for rethrows the first exception a member raised once the
  // team has joined; the other members finish the remaining units first.
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    for (int64_t u = next.fetch_add(1, std::memory_order_relaxed); u < num_units;
         u = next.fetch_add(1, std::memory_order_relaxed))
      body(u);
  });
}

// Runs body(u) for u in [0, num_units) on the calling thread and `helpers` inter-op pool threads, which
// claim units only once they run; the caller never waits for a helper to start.
template <typename F>
void run_units_with_interop_helpers(int64_t num_units, int64_t helpers, const F& body) {
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

// Runs body(u) for u in [0, num_units) on the calling thread and up to `helpers` more threads, as the
// idle cores allow (see the top of this file); on the caller alone inside a parallel region.
template <typename F>
void run_units_helped(int64_t num_units, int64_t helpers, const F& body) {
  helpers = std::min<int64_t>(helpers, num_units - 1);
  const int64_t idle = helpers > 0 && !at::in_parallel_region() ? idle_cores() : 0;
  helpers = std::min(helpers, idle);
  if (helpers <= 0) {
    for (int64_t u = 0; u < num_units; ++u) body(u);
    return;
  }
#if AT_PARALLEL_OPENMP && defined(_OPENMP)
  if (idle >= at::get_num_threads() - 1) return run_units_on_team(num_units, body);
#endif
  run_units_with_interop_helpers(num_units, helpers, body);
}

}  // namespace bfdkern::cpu
