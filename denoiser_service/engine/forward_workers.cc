#include "denoiser_service/engine/forward_workers.h"

#include <algorithm>
#include <utility>

namespace dgrid {

ForwardWorkers::ForwardWorkers(Options options) : options_(options) {
  const int workers = std::max(1, options_.cores) - 1;  // the caller runs chunk 0
  for (int w = 1; w <= workers; ++w) threads_.emplace_back([this, w] { Work(w); });
}

ForwardWorkers::~ForwardWorkers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_.notify_all();
  for (std::thread& t : threads_) t.join();
}

std::vector<ForwardWorkers::Chunk> ForwardWorkers::Split(int rows) const {
  const int cores = std::max(1, options_.cores);
  const int n = options_.min_chunk_rows > 0 ? std::clamp(rows / options_.min_chunk_rows, 1, cores) : 1;
  std::vector<Chunk> chunks(n);
  int begin = 0;
  for (int i = 0; i < n; ++i) {
    chunks[i].begin = begin;
    chunks[i].count = rows / n + (i < rows % n ? 1 : 0);
    chunks[i].threads = cores / n + (i < cores % n ? 1 : 0);
    begin += chunks[i].count;
  }
  return chunks;
}

absl::Status ForwardWorkers::Run(int rows, const ChunkFn& fn) {
  std::vector<Chunk> chunks = Split(rows);
  if (chunks.size() == 1) return fn(0, rows);
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    chunks_ = chunks;
    results_.assign(chunks.size(), absl::OkStatus());
    pending_ = static_cast<int>(chunks.size()) - 1;
    ++generation_;
  }
  start_.notify_all();
  SetThisThreadTorchThreads(chunks[0].threads);
  absl::Status first = fn(chunks[0].begin, chunks[0].count);
  SetThisThreadTorchThreads(std::max(1, options_.cores));
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [this] { return pending_ == 0; });
  fn_ = nullptr;
  if (!first.ok()) return first;
  for (const absl::Status& s : results_) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

void ForwardWorkers::Work(int worker) {
  unsigned seen = 0;
  int threads = 0;  // what this thread's intra-op count was last set to
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    start_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    if (worker >= static_cast<int>(chunks_.size())) continue;  // this pass has fewer chunks
    const Chunk chunk = chunks_[worker];
    const ChunkFn* fn = fn_;
    lock.unlock();
    if (threads != chunk.threads) {
      SetThisThreadTorchThreads(chunk.threads);
      threads = chunk.threads;
    }
    absl::Status s = (*fn)(chunk.begin, chunk.count);
    lock.lock();
    results_[worker] = std::move(s);
    if (--pending_ == 0) done_.notify_one();
  }
}

}  // namespace dgrid
