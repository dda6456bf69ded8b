// Independent work units run by torch's intra-op team, but only on cores that other processes leave
// idle.
//
// at::parallel_for (OpenMP in torch's builds) forks a team and joins it at a barrier, so a call lasts
// until its slowest member has run: when other processes keep the cores busy (DataLoader workers in
// training), a member that is not scheduled holds the whole call (the 2-thread loss at B = 256
// measured 15.9 ms against 2.0 ms on one thread with two busy processes). So the team is only as
// large as the idle cores allow (idle_cores), and none is formed on a busy machine: the caller then
// runs every unit itself. Inside the team, members claim units from an atomic counter, so a member
// that starts late finds less to do and the units spread by speed, not by a fixed split.
//
// Why the intra-op team and not helpers queued on the inter-op pool (at::launch), which the caller
// need never wait for: right after any parallel aten op (a clone, an add in autograd) torch's OpenMP
// workers spin for a while, and such a spinning worker holds the core an inter-op helper would need.
// Measured at B = 1024 on 2 idle cores, `loss.backward()` ran 11.9 ms with inter-op helpers against
// 8 ms here: the spinning worker is the member that picks the work up at once.
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
#include <cstring>
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
// CPUs minus the tasks of other processes running or runnable now (the 4th field of /proc/loadavg
// less this process's own running threads), minus the caller's core; read at most every 10 ms.
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
      idle = std::clamp<int64_t>(cpus - running, 0, cpus - 1);  // `running` counts the caller
      // Only when that leaves a core busy is it worth telling this process's threads apart (one small read a
      // thread): where the caller is the only one of them running, the two counts agree.
      const int64_t own = idle < cpus - 1 ? own_running_threads() : -1;
      if (own >= 1) idle = std::clamp<int64_t>(cpus - (running - own) - 1, 0, cpus - 1);
    }
  }
  cached.store(idle, std::memory_order_relaxed);
  read_at.store(now, std::memory_order_relaxed);
  return idle;
}

// Runs body(u) for u in [0, num_units) on the calling thread and up to `helpers` more members of
// torch's intra-op team (fewer when the machine has fewer idle cores; none inside a parallel region).
template <typename F>
void run_units_helped(int64_t num_units, int64_t helpers, const F& body) {
  helpers = std::min<int64_t>(helpers, num_units - 1);
  if (helpers > 0) helpers = std::min(helpers, idle_cores());
  if (helpers <= 0 || at::in_parallel_region()) {
    for (int64_t u = 0; u < num_units; ++u) body(u);
    return;
  }
  std::atomic<int64_t> next{0};
  // One slot per member (grain 1): each member claims units until none are left. at::parallel_for
  // rethrows the first exception a member raised once the team has joined.
  at::parallel_for(0, helpers + 1, 1, [&](int64_t, int64_t) {
    for (int64_t u = next.fetch_add(1, std::memory_order_relaxed); u < num_units;
         u = next.fetch_add(1, std::memory_order_relaxed))
      body(u);
  });
}

}  // namespace bfdkern::cpu
