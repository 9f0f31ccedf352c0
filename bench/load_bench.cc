// dgrid-bench load: keeps N concurrent StreamGrid clients busy for T seconds
// against a fresh stack on loopback (2 denoisers + orchestrator, started
// here), for each N. One JSON line per N: grids/s, p50/p99 latency, errors
// by code, peak RSS of every process, and the cache's size at the end. Every
// grid has a distinct seed, so the cache cannot answer for the replicas and
// its bound is exercised.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "absl/flags/flag.h"
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

namespace dgrid {
namespace {

// Peak resident set (VmHWM) of a process, in MiB.
double PeakRssMb(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      double kb = 0;
      if (parts.size() >= 2 && absl::SimpleAtod(parts[1], &kb)) return kb / 1024.0;
    }
  }
  return -1;
}

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
      .Set("rss_peak_mb_orchestrator", PeakRssMb((*stack)->orchestrator().pid()))
      .Set("rss_peak_mb_denoiser0", PeakRssMb((*stack)->denoiser(0).pid()))
      .Set("rss_peak_mb_denoiser1", PeakRssMb((*stack)->denoiser(1).pid()))
      .Set("cache_bytes", (*stack)->Metric(-1, "dgrid_orchestrator_cache_bytes"))
      .Set("max_concurrent_grids", absl::GetFlag(FLAGS_load_max_grids));
  std::string by_code;
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
