// Runs one model pass as parallel chunks of its rows, a worker thread per
// chunk, each with its share of the replica's cores as intra-op threads.
//
// Intra-op threads (OpenMP inside each torch op) scale poorly on the small
// tensors of a grid's forward passes: profiled on 2 cores, one forward at a
// time left the CPUs idle 37 % of the time, while two single-thread
// processes on the same cores ran the same grid 1.5x faster
// (bench/PROFILE.md). A pass's rows are independent, so the engine splits
// them instead: n chunks, n = rows / min_chunk_rows capped at the cores, and
// the cores shared out among the chunks. A pass too small to split runs
// whole with every core, as before.
//
//   ForwardWorkers workers({.cores = 2, .min_chunk_rows = 1});
//   RETURN_IF_ERROR(workers.Run(rows, [&](int begin, int count) {
//     return ForwardRows(model, ..., begin, count, out.subspan(begin * numel, count * numel));
//   }));
//
// The model's passes are safe to run concurrently (TorchScript's interpreter
// keeps no per-call state in the module). Chunk boundaries depend only on
// the row count and the options, never on timing. Torch-free header.
#ifndef DGRID_DENOISER_ENGINE_FORWARD_WORKERS_H_
#define DGRID_DENOISER_ENGINE_FORWARD_WORKERS_H_

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace dgrid {

class ForwardWorkers {
 public:
  struct Options {
    // Cores the replica may use: the most chunks, and the threads shared
    // out among them.
    int cores = 1;
    // A chunk has at least this many rows; smaller passes split less. 0:
    // never split (every pass whole, on intra-op threads alone).
    int min_chunk_rows = 1;
  };
  // One chunk of a pass: its first row and its row count.
  struct Chunk {
    int begin = 0;
    int count = 0;
    int threads = 1;  // intra-op threads it runs with
  };
  using ChunkFn = std::function<absl::Status(int begin, int count)>;

  explicit ForwardWorkers(Options options);
  ~ForwardWorkers();
  ForwardWorkers(const ForwardWorkers&) = delete;
  ForwardWorkers& operator=(const ForwardWorkers&) = delete;

  // How `rows` split: contiguous, in order, sizes differing by at most one.
  std::vector<Chunk> Split(int rows) const;

  // Runs fn on every chunk of `rows`, the first on the calling thread, the
  // others on the workers, and returns when all are done: OK, or the first
  // chunk's error in row order. The calling thread's intra-op threads are
  // back at `cores` afterwards. Not reentrant: one caller (the batcher's
  // thread) at a time.
  absl::Status Run(int rows, const ChunkFn& fn);

  const Options& options() const { return options_; }

 private:
  void Work(int worker);

  const Options options_;
  std::mutex mu_;
  std::condition_variable start_, done_;
  // The pass being run; guarded by mu_.
  const ChunkFn* fn_ = nullptr;
  std::vector<Chunk> chunks_;
  std::vector<absl::Status> results_;
  int pending_ = 0;
  unsigned generation_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Sets the calling thread's torch intra-op (OpenMP) thread count; OpenMP
// keeps it per thread. Defined with the engine's torch code.
void SetThisThreadTorchThreads(int threads);

}  // namespace dgrid

#endif  // DGRID_DENOISER_ENGINE_FORWARD_WORKERS_H_
