// dgrid-bench load: keeps N concurrent StreamGrid clients busy for T seconds
// against a fresh stack on loopback (2 denoisers + orchestrator, started
// here), for each N. One JSON line per N: grids/s, p50/p99 latency, errors
// by code, the cache's size at the end, and memory per service: the RSS
// plateau (median of the samples in the second half of the load window, when
// the grids in flight have reached their steady number), its anonymous part,
// the peak (VmHWM) and the thread count. Every grid has a distinct seed, so
// the cache cannot answer for the replicas and its bound is exercised.
//
//   dgrid-bench load --clients=1,16,64 --load_malloc_arena_max=2
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_json.h"
#include "dgrid/v1/orchestrator.grpc.pb.h"
#include "tests/support/stack.h"

ABSL_FLAG(std::vector<std::string>, clients, std::vector<std::string>({"1", "4", "16", "64"}),
          "dgrid-bench load: concurrent StreamGrid clients, one run per value.");
ABSL_FLAG(double, load_seconds, 20, "dgrid-bench load: seconds of load per run.");
ABSL_FLAG(std::string, load_preset, "", "dgrid-bench load: grid preset.");
ABSL_FLAG(int, load_max_grids, 16,
          "dgrid-bench load: the orchestrator's --max_concurrent_grids (backpressure bound).");
ABSL_FLAG(int, load_cache_mb, 64, "dgrid-bench load: the orchestrator's --cache_mb.");
ABSL_FLAG(int, load_malloc_arena_max, 0,
          "dgrid-bench load: MALLOC_ARENA_MAX in the services' environment; 0 = glibc's "
          "default (8 arenas per core).");
ABSL_FLAG(double, load_sample_ms, 250, "dgrid-bench load: RSS sampling period.");
ABSL_FLAG(int, load_branches, 0, "dgrid-bench load: branches per row; 0 = the preset's.");
ABSL_FLAG(int, load_steps, 0,
          "dgrid-bench load: denoising steps; 0 = the preset's. Few steps and many branches "
          "make grids that cost the orchestrator (PNGs, events) more than the denoisers.");

namespace dgrid {
namespace {

// Fields of /proc/PID/status in kB (VmRSS, RssAnon, VmHWM) or as counts
// (Threads); -1 when absent.
std::map<std::string, double> ProcStatus(pid_t pid) {
  std::map<std::string, double> out;
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> parts =
        absl::StrSplit(line, absl::ByAnyChar(": \t"), absl::SkipEmpty());
    double value = 0;
    if (parts.size() >= 2 && absl::SimpleAtod(parts[1], &value)) out[parts[0]] = value;
  }
  return out;
}

double Field(const std::map<std::string, double>& status, const std::string& key) {
  auto it = status.find(key);
  return it == status.end() ? -1 : it->second;
}

double Median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Where a process's resident memory lies, from /proc/PID/smaps, in MiB:
//   file        mapped files (binary, shared libraries, fonts)
//   main_heap   glibc's main arena ([heap], grown by brk)
//   arenas      glibc's other arenas: heaps that start on a 64 MiB boundary
//               (HEAP_MAX_SIZE); a thread makes an arena of its own while
//               fewer than MALLOC_ARENA_MAX (default 8 per core) exist
//   stacks      thread stacks (an RLIMIT_STACK-sized rw mapping right behind a
//               no-access guard page) and the main stack
//   other_anon  the rest: allocations above the mmap threshold (large PNG
//               and protobuf buffers, torch tensors), gRPC's own mappings
struct MemoryMap {
  std::map<std::string, double> rss_mb = {
      {"file", 0}, {"main_heap", 0}, {"arenas", 0}, {"stacks", 0}, {"other_anon", 0}};
  int arena_heaps = 0;
};

MemoryMap ReadMemoryMap(pid_t pid) {
  constexpr uint64_t kHeapMaxSize = 64ull << 20;
  // glibc sizes thread stacks by RLIMIT_STACK, which the services inherit.
  struct rlimit stack_limit = {};
  getrlimit(RLIMIT_STACK, &stack_limit);
  const uint64_t thread_stack =
      stack_limit.rlim_cur == RLIM_INFINITY ? (2ull << 20) : stack_limit.rlim_cur;
  MemoryMap map;
  std::ifstream in(absl::StrCat("/proc/", pid, "/smaps"));
  std::string line;
  std::string part;
  uint64_t prev_end = 0;
  bool prev_guard = false;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() >= 5 && f[1].size() == 4 && f[0].find('-') != std::string::npos) {
      // A mapping's header: "start-end perms offset dev inode [path]".
      std::vector<std::string> range = absl::StrSplit(f[0], '-');
      const uint64_t start = std::stoull(range[0], nullptr, 16);
      const uint64_t end = std::stoull(range[1], nullptr, 16);
      const std::string path = f.size() >= 6 ? f[5] : "";
      const bool writable = f[1][1] == 'w';
      if (path == "[heap]") {
        part = "main_heap";
      } else if (path == "[stack]") {
        part = "stacks";
      } else if (!path.empty()) {
        part = path[0] == '[' ? "other_anon" : "file";
      } else if (writable && start % kHeapMaxSize == 0) {
        part = "arenas";
        ++map.arena_heaps;
      } else if (writable && prev_guard && prev_end == start &&
                 end - start >= thread_stack - (64 << 10) && end - start <= thread_stack) {
        part = "stacks";
      } else {
        part = "other_anon";
      }
      prev_guard = path.empty() && f[1].rfind("---", 0) == 0;
      prev_end = end;
    } else if (line.rfind("Rss:", 0) == 0 && f.size() >= 2 && !part.empty()) {
      double kb = 0;
      if (absl::SimpleAtod(f[1], &kb)) map.rss_mb[part] += kb / 1024.0;
    }
  }
  return map;
}

// Samples one process's memory while the load runs. The plateau is the
// median of the second half of the samples: the first half holds the ramp
// (grids starting, arenas and caches growing), and a median ignores the odd
// sample taken while a grid's PNG and protobuf buffers are live.
class RssSampler {
 public:
  explicit RssSampler(pid_t pid) : pid_(pid) {}
  void Sample() {
    const auto status = ProcStatus(pid_);
    rss_mb_.push_back(Field(status, "VmRSS") / 1024.0);
    anon_mb_.push_back(Field(status, "RssAnon") / 1024.0);
    threads_.push_back(Field(status, "Threads"));
  }
  // Once, at the end of the plateau: reading smaps is costly with many threads.
  void ReadMap() { map_ = ReadMemoryMap(pid_); }
  // Adds "<what>_<service>" fields to the line.
  void Report(const std::string& service, BenchLine* line) const {
    line->Set("rss_plateau_mb_" + service, Median(SecondHalf(rss_mb_)))
        .Set("rss_anon_plateau_mb_" + service, Median(SecondHalf(anon_mb_)))
        .Set("rss_peak_mb_" + service, Field(ProcStatus(pid_), "VmHWM") / 1024.0)
        .Set("threads_plateau_" + service, Median(SecondHalf(threads_)));
    for (const auto& [part, mb] : map_.rss_mb) {
      line->Set(absl::StrCat("rss_", part, "_mb_", service), mb);
    }
    line->Set("arena_heaps_" + service, map_.arena_heaps);
  }

 private:
  static std::vector<double> SecondHalf(const std::vector<double>& v) {
    return std::vector<double>(v.begin() + v.size() / 2, v.end());
  }
  pid_t pid_;
  std::vector<double> rss_mb_, anon_mb_, threads_;
  MemoryMap map_;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

int RunOne(int clients, std::atomic<uint64_t>* next_seed) {
  testing::StackOptions options;
  options.model_dir = testing::ModelDir();
  options.orchestrator_flags = {
      absl::StrCat("--max_concurrent_grids=", absl::GetFlag(FLAGS_load_max_grids)),
      "--max_grids_per_client=100000",
      absl::StrCat("--cache_mb=", absl::GetFlag(FLAGS_load_cache_mb))};
  // The children inherit the environment; glibc read this process's own
  // MALLOC_ARENA_MAX at its start, so the bench itself is unaffected.
  const int arena_max = absl::GetFlag(FLAGS_load_malloc_arena_max);
  if (arena_max > 0) {
    setenv("MALLOC_ARENA_MAX", std::to_string(arena_max).c_str(), 1);
  } else {
    unsetenv("MALLOC_ARENA_MAX");
  }
  auto stack = testing::Stack::Start(options, absl::StrCat("load-", clients));
  if (!stack.ok()) {
    std::cerr << "dgrid-bench load: " << stack.status() << "\n";
    return 1;
  }
  auto channel = grpc::CreateChannel((*stack)->orchestrator_address(),
                                     grpc::InsecureChannelCredentials());
  std::mutex mu;
  std::vector<double> latencies;
  std::map<std::string, int> errors;
  const absl::Time end = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_load_seconds));
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      auto stub = v1::Orchestrator::NewStub(channel);
      while (absl::Now() < end) {
        v1::GridRequest request;
        request.set_seed(next_seed->fetch_add(1));
        request.set_preset(absl::GetFlag(FLAGS_load_preset));
        if (absl::GetFlag(FLAGS_load_branches) > 0) {
          request.mutable_branches()->set_value(absl::GetFlag(FLAGS_load_branches));
        }
        if (absl::GetFlag(FLAGS_load_steps) > 0) {
          request.mutable_steps()->set_value(absl::GetFlag(FLAGS_load_steps));
        }
        grpc::ClientContext context;
        // Bounded: a grid that cannot finish by the end of the run is cut.
        context.set_deadline(absl::ToChronoTime(end + absl::Seconds(30)));
        const absl::Time start = absl::Now();
        auto reader = stub->StreamGrid(&context, request);
        v1::GridEvent event;
        while (reader->Read(&event)) {
        }
        const grpc::Status status = reader->Finish();
        const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
        std::lock_guard<std::mutex> lock(mu);
        if (status.ok()) {
          latencies.push_back(seconds);
        } else {
          ++errors[std::to_string(status.error_code())];
          // Backpressure: back off briefly, as a client should.
          if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
            absl::SleepFor(absl::Milliseconds(50));
          }
        }
      }
    });
  }
  const absl::Time start = absl::Now();
  RssSampler orchestrator_rss((*stack)->orchestrator().pid());
  std::vector<RssSampler> denoiser_rss = {RssSampler((*stack)->denoiser(0).pid()),
                                          RssSampler((*stack)->denoiser(1).pid())};
  const absl::Duration period = absl::Milliseconds(absl::GetFlag(FLAGS_load_sample_ms));
  // Only the load window counts: after `end` the grids in flight drain.
  while (absl::Now() < end) {
    orchestrator_rss.Sample();
    for (RssSampler& d : denoiser_rss) d.Sample();
    absl::SleepFor(period);
  }
  orchestrator_rss.ReadMap();
  for (RssSampler& d : denoiser_rss) d.ReadMap();
  for (auto& t : threads) t.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);

  BenchLine line;
  line.Set("bench", "load")
      .Set("clients", clients)
      .Set("seconds", elapsed)
      .Set("grids", static_cast<double>(latencies.size()))
      .Set("grids_per_s", latencies.size() / elapsed)
      .Set("p50_s", Percentile(latencies, 0.50))
      .Set("p99_s", Percentile(latencies, 0.99))
      .Set("cache_bytes", (*stack)->Metric(-1, "dgrid_orchestrator_cache_bytes"))
      .Set("cache_mb", absl::GetFlag(FLAGS_load_cache_mb))
      .Set("max_concurrent_grids", absl::GetFlag(FLAGS_load_max_grids))
      .Set("branches", absl::GetFlag(FLAGS_load_branches))
      .Set("steps", absl::GetFlag(FLAGS_load_steps))
      .Set("malloc_arena_max", arena_max > 0 ? std::to_string(arena_max) : "default")
      .Set("cpu", CpuModel())
      .Set("cores", static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN)));
  orchestrator_rss.Report("orchestrator", &line);
  for (size_t i = 0; i < denoiser_rss.size(); ++i) {
    denoiser_rss[i].Report(absl::StrCat("denoiser", i), &line);
  }
  for (const auto& [code, count] : errors) {
    // gRPC code numbers: 8 = RESOURCE_EXHAUSTED (documented backpressure).
    line.Set(absl::StrCat("errors_code_", code), count);
  }
  line.Print();
  return 0;
}

}  // namespace

int RunLoadBench() {
  std::atomic<uint64_t> next_seed{1000000};
  for (const std::string& n : absl::GetFlag(FLAGS_clients)) {
    int clients = 0;
    if (!absl::SimpleAtoi(n, &clients) || clients < 1) {
      std::cerr << "dgrid-bench load: --clients takes positive integers\n";
      return 2;
    }
    if (int rc = RunOne(clients, &next_seed); rc != 0) return rc;
  }
  return 0;
}

}  // namespace dgrid
