// dgrid-bench denoiser: the engine's raw forward throughput (images/s at
// batch 1, 2, 4, 8, 32, 128, no sampler, no RPC; then the decoder's and the
// judge's, the rest of a decision curve's work) against the same model behind the
// gRPC service on loopback with 1, 4 and 16 concurrent clients. The ratio of
// the service's best to the engine's best is what RPC, encoding, noise and
// batching cost.
#include <grpcpp/grpcpp.h>

#include <array>
#include <atomic>
#include <functional>
#include <initializer_list>
#include <thread>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/bench_json.h"
#include "bench/raw_forward.h"
#include "denoiser_service/engine/denoiser_model.h"
#include "denoiser_service/engine/image_judge.h"
#include "denoiser_service/server/denoiser_server.h"
#include "denoiser_service/text/tokenizer.h"
#include "dgrid/v1/denoiser.grpc.pb.h"
#include "tests/support/child_process.h"

ABSL_FLAG(std::string, model_dir, "models/fashion-mnist", "Model bundle to benchmark.");
ABSL_FLAG(double, seconds, 3.0, "Measured time per configuration.");
ABSL_FLAG(int, threads, 0, "Torch intra-op threads; 0 = one per core.");
ABSL_FLAG(int, trajectories_per_request, 8, "Trajectories in each client request.");

namespace dgrid {
namespace {

int Threads() {
  const int t = absl::GetFlag(FLAGS_threads);
  return t > 0 ? t : static_cast<int>(std::thread::hardware_concurrency());
}


// Images per second through the model (forward rows, read from the
// server's own counter, so long requests that straddle the window count
// exactly) while `clients` concurrent Branch callers keep it busy.
double ServiceThroughput(int port, int metrics_port, const std::string& model, int clients,
                         double seconds, int steps, int* errors) {
  auto channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  std::atomic<int> failed{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = v1::Denoiser::NewStub(channel);
      v1::BranchRequest request;
      request.set_model(model);
      request.mutable_sampler()->set_steps(steps);
      request.mutable_sampler()->set_eta(1.0f);
      request.mutable_sampler()->set_guidance(1.0f);
      for (int i = 0; i < absl::GetFlag(FLAGS_trajectories_per_request); ++i) {
        v1::Path* p = request.add_trajectories()->mutable_path();
        p->set_init_seed(c * 1000 + i);
        p->add_segments()->set_noise_seed(i);
      }
      while (!stop) {
        grpc::ClientContext context;
        auto reader = stub->Branch(&context, request);
        v1::BranchEvent event;
        while (reader->Read(&event)) {
        }
        const grpc::Status status = reader->Finish();
        if (!status.ok() && !stop) ++failed;
      }
    });
  }
  auto rows = [&] {
    auto text = testing::HttpGet(metrics_port, "/metrics");
    return text.ok() ? testing::MetricValue(*text, "dgrid_denoiser_forward_rows_total") : -1;
  };
  absl::SleepFor(absl::Seconds(1));  // warm-up: every client has a request in flight
  const double before = rows();
  const absl::Time start = absl::Now();
  absl::SleepFor(absl::Seconds(seconds));
  const double after = rows();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  stop = true;
  for (auto& t : threads) t.join();
  *errors = failed;
  return (after - before) / elapsed;
}

// Times a raw `pass` of `model` at each batch size, whole on the intra-op
// threads and (from batch 2, with 2 threads or more) as a chunk per core,
// each on a thread of its own as the engine runs passes; prints a line per
// configuration (engine_<pass>[_chunked]_b<batch>) and returns the best
// images/s and its batch.
std::pair<double, int> SweepRawPasses(
    const std::string& pass, const DenoiserModel& model, int threads,
    std::initializer_list<int> batches,
    const std::function<double(ForwardWorkers& workers, int batch)>& seconds_per_pass) {
  std::pair<double, int> best = {0, 0};
  for (int batch : batches) {
    for (int min_chunk_rows : {0, 1}) {
      if (min_chunk_rows > 0 && (batch < 2 || threads < 2)) continue;
      double ips = 0;
      std::thread([&] {
        ForwardWorkers workers({.cores = threads, .min_chunk_rows = min_chunk_rows});
        const double each = seconds_per_pass(workers, batch);
        ips = each > 0 ? batch / each : 0;
      }).join();
      if (ips > best.first) best = {ips, batch};
      BenchLine()
          .Set("bench", "denoiser")
          .Set("config", absl::StrCat("engine_", pass, "_", min_chunk_rows ? "chunked_" : "", "b",
                                      batch))
          .Set("model", model.manifest().name)
          .Set("device", model.device())
          .Set("threads", threads)
          .Set("batch", batch)
          .Set("chunks", min_chunk_rows ? std::min(batch, threads) : 1)
          .Set("images_per_s", ips)
          .Set("ms_per_image", 1000.0 / ips)
          .Print();
    }
  }
  return best;
}

}  // namespace

std::string GridBenchModelDir() { return absl::GetFlag(FLAGS_model_dir); }
int GridBenchThreads() { return Threads(); }

int RunDenoiserBench() {
  const std::string dir = absl::GetFlag(FLAGS_model_dir);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const int threads = Threads();
  SetTorchThreads(threads);
  auto model = DenoiserModel::Load(dir, {"auto"});
  if (!model.ok()) {
    std::cerr << "dgrid-bench: " << model.status().message() << "\n";
    return 1;
  }
  const std::string name = (*model)->manifest().name;
  // Each batch whole on the intra-op threads, and (from batch 2) as a
  // chunk per core, as the engine runs a pass (forward_workers.h).
  const auto [best_raw, best_batch] =
      SweepRawPasses("forward", **model, threads, {1, 2, 4, 8, 16, 32, 64, 128},
                     [&](ForwardWorkers& workers, int batch) {
                       return SecondsPerForward(**model, workers, batch, absl::Seconds(seconds));
                     });
  // The other passes a decision curve runs on the denoiser: the decoder
  // and the judge, as RunBeside runs them.
  SweepRawPasses("decode", **model, threads, {1, 2, 8, 32}, [&](ForwardWorkers& workers, int batch) {
    return SecondsPerDecode(**model, workers, batch, absl::Seconds(seconds));
  });
  std::unique_ptr<ImageJudge> judge;
  if ((*model)->manifest().judge.present()) {
    auto loaded = ImageJudge::Load(dir, (*model)->manifest(), (*model)->device());
    if (!loaded.ok()) {
      std::cerr << "dgrid-bench: " << loaded.status().message() << "\n";
      return 1;
    }
    judge = std::move(*loaded);
    SweepRawPasses("judge", **model, threads, {1, 2, 8, 32},
                   [&](ForwardWorkers& workers, int batch) {
                     return SecondsPerJudge(*judge, (*model)->manifest(), workers, batch,
                                            absl::Seconds(seconds));
                   });
  }
  judge.reset();
  model->reset();  // free the engine's copy before the server loads its own

  DenoiserServerOptions options;
  options.model_dirs = {dir};
  options.listen = "127.0.0.1:0";
  options.threads = threads;
  options.max_batch = 128;
  options.metrics_addr = "127.0.0.1:0";
  auto server = DenoiserServer::Start(options);
  if (!server.ok()) {
    std::cerr << "dgrid-bench: " << server.status().message() << "\n";
    return 1;
  }
  const int steps = 50;
  for (int clients : {1, 4, 16}) {
    int errors = 0;
    const double ips =
        ServiceThroughput((*server)->port(), (*server)->metrics_port(), name, clients, seconds,
                          steps, &errors);
    BenchLine()
        .Set("bench", "denoiser")
        .Set("config", absl::StrCat("service_c", clients))
        .Set("model", name)
        .Set("threads", threads)
        .Set("clients", clients)
        .Set("trajectories_per_request", absl::GetFlag(FLAGS_trajectories_per_request))
        .Set("images_per_s", ips)
        .Set("ratio_to_best_engine", ips / best_raw)
        .Set("best_engine_batch", best_batch)
        .Set("errors", errors)
        .Print();
  }
  return 0;
}

}  // namespace dgrid
