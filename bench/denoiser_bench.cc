// dgrid-bench denoiser: the engine's raw forward throughput (images/s at
// batch 1, 2, 4, 8, 32, 128, no sampler, no RPC) against the same model behind the
// gRPC service on loopback with 1, 4 and 16 concurrent clients. The ratio of
// the service's best to the engine's best is what RPC, encoding, noise and
// batching cost.
#include <grpcpp/grpcpp.h>

#include <array>
#include <atomic>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/bench_json.h"
#include "denoiser_service/engine/denoiser_model.h"
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

// Images per second of back-to-back forward passes at `batch`: the image
// denoiser alone (a text model's context is encoded once, outside the loop,
// as the engine caches it).
double RawForward(DenoiserModel& model, int batch, double seconds) {
  const int64_t numel = model.latent_numel();
  std::vector<float> x(batch * numel, 0.1f), out(batch * numel);
  std::vector<int64_t> t(batch, 500), cond(batch, model.manifest().null_label);
  std::vector<float> context, time_ids;
  if (const Tokenizer* tokenizer = model.tokenizer()) {
    const std::vector<int64_t> empty = tokenizer->Padded(tokenizer->Encode(""));
    std::vector<int64_t> ids;
    for (int i = 0; i < batch; ++i) ids.insert(ids.end(), empty.begin(), empty.end());
    context.resize(batch * model.encoding_size());
    if (!model.EncodeText(ids, batch, absl::MakeSpan(context)).ok()) return 0;
    if (model.manifest().text.size_ids) {
      const std::array<float, 6> row = model.TimeIds({});
      for (int i = 0; i < batch; ++i) time_ids.insert(time_ids.end(), row.begin(), row.end());
    }
  }
  auto forward = [&] {
    return context.empty() ? model.Forward(x, t, cond, batch, absl::MakeSpan(out))
                           : model.ForwardText(x, t, context, time_ids, batch,
                                               absl::MakeSpan(out));
  };
  for (int i = 0; i < 2; ++i) (void)forward();
  int64_t images = 0;
  const absl::Time start = absl::Now();
  while (absl::Now() - start < absl::Seconds(seconds) || images < 3 * batch) {
    if (!forward().ok()) return 0;
    images += batch;
  }
  return images / absl::ToDoubleSeconds(absl::Now() - start);
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
  double best_raw = 0;
  int best_batch = 0;
  for (int batch : {1, 2, 4, 8, 32, 128}) {
    double ips = 0;
    // On a thread of its own, as the engine runs forward passes.
    std::thread([&] { ips = RawForward(**model, batch, seconds); }).join();
    if (ips > best_raw) {
      best_raw = ips;
      best_batch = batch;
    }
    BenchLine()
        .Set("bench", "denoiser")
        .Set("config", absl::StrCat("engine_forward_b", batch))
        .Set("model", name)
        .Set("device", (*model)->device())
        .Set("threads", threads)
        .Set("batch", batch)
        .Set("images_per_s", ips)
        .Set("ms_per_image", 1000.0 / ips)
        .Print();
  }
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
