#include "denoiser_service/engine/forward_workers.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "denoiser_service/engine/denoiser_model.h"
#include "denoiser_service/text/tokenizer.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

using Chunk = ForwardWorkers::Chunk;

std::vector<std::vector<int>> Shape(const std::vector<Chunk>& chunks) {
  std::vector<std::vector<int>> out;
  for (const Chunk& c : chunks) out.push_back({c.begin, c.count, c.threads});
  return out;
}

TEST(ForwardWorkersTest, SplitsRowsEvenlyAndSharesTheCoresOut) {
  ForwardWorkers two({.cores = 2, .min_chunk_rows = 1});
  EXPECT_EQ(Shape(two.Split(10)), (std::vector<std::vector<int>>{{0, 5, 1}, {5, 5, 1}}));
  EXPECT_EQ(Shape(two.Split(7)), (std::vector<std::vector<int>>{{0, 4, 1}, {4, 3, 1}}));
  // One row cannot split: it runs whole, with every core.
  EXPECT_EQ(Shape(two.Split(1)), (std::vector<std::vector<int>>{{0, 1, 2}}));

  ForwardWorkers four({.cores = 4, .min_chunk_rows = 2});
  // 5 rows of at least 2: two chunks, two threads each.
  EXPECT_EQ(Shape(four.Split(5)), (std::vector<std::vector<int>>{{0, 3, 2}, {3, 2, 2}}));
  EXPECT_EQ(Shape(four.Split(64)),
            (std::vector<std::vector<int>>{{0, 16, 1}, {16, 16, 1}, {32, 16, 1}, {48, 16, 1}}));
  ForwardWorkers three({.cores = 3, .min_chunk_rows = 1});
  EXPECT_EQ(Shape(three.Split(2)), (std::vector<std::vector<int>>{{0, 1, 2}, {1, 1, 1}}));

  ForwardWorkers whole({.cores = 4, .min_chunk_rows = 0});
  EXPECT_EQ(Shape(whole.Split(64)), (std::vector<std::vector<int>>{{0, 64, 4}}));
}

TEST(ForwardWorkersTest, RunsEveryChunkOnceInParallelWithItsThreads) {
  ForwardWorkers workers({.cores = 2, .min_chunk_rows = 1});
  omp_set_num_threads(2);
  for (int pass = 0; pass < 50; ++pass) {
    const int rows = 1 + pass % 9;
    std::vector<std::atomic<int>> seen(rows);
    std::mutex mu;
    std::set<std::thread::id> threads;
    // Every chunk waits (boundedly) for all of them to have started: they
    // all arrive only when they run at the same time.
    const int chunks = static_cast<int>(workers.Split(rows).size());
    std::atomic<int> arrived{0}, met{0};
    ASSERT_TRUE(workers
                    .Run(rows,
                         [&](int begin, int count) {
                           ++arrived;
                           const absl::Time give_up = absl::Now() + absl::Seconds(20);
                           while (arrived < chunks && absl::Now() < give_up) {
                             absl::SleepFor(absl::Microseconds(100));
                           }
                           if (arrived == chunks) ++met;
                           for (int r = begin; r < begin + count; ++r) ++seen[r];
                           {
                             std::lock_guard<std::mutex> lock(mu);
                             threads.insert(std::this_thread::get_id());
                           }
                           // Each chunk has its share of the threads.
                           EXPECT_EQ(omp_get_max_threads(), rows > 1 ? 1 : 2);
                           return absl::OkStatus();
                         })
                    .ok());
    for (int r = 0; r < rows; ++r) EXPECT_EQ(seen[r], 1) << "row " << r;
    EXPECT_EQ(threads.size(), rows > 1 ? 2u : 1u);
    EXPECT_EQ(met, chunks) << "the chunks did not run at the same time";
    // The caller is back at every core.
    EXPECT_EQ(omp_get_max_threads(), 2);
  }
}

TEST(ForwardWorkersTest, ReturnsTheFirstChunksErrorAndKeepsWorking) {
  ForwardWorkers workers({.cores = 2, .min_chunk_rows = 1});
  auto failing = [](int failing_begin) {
    return [failing_begin](int begin, int count) {
      return begin == failing_begin ? absl::InternalError(absl::StrCat("chunk at ", begin))
                                    : absl::OkStatus();
    };
  };
  EXPECT_EQ(workers.Run(4, failing(2)).message(), "chunk at 2");
  EXPECT_EQ(workers.Run(4, failing(0)).message(), "chunk at 0");
  EXPECT_EQ(workers.Run(4, [](int begin, int) {
                     return absl::InternalError(absl::StrCat("chunk at ", begin));
                   }).message(),
            "chunk at 0");
  EXPECT_TRUE(workers.Run(4, failing(-1)).ok());
}

// The model's forward on two threads at once gives each chunk exactly what
// the same chunk gives alone: the passes share no state.
TEST(ForwardWorkersTest, ConcurrentForwardsEqualTheSameChunksOneAfterAnother) {
  const char* fixtures = std::getenv("DGRID_FIXTURES");
  ASSERT_NE(fixtures, nullptr) << "set DGRID_FIXTURES";
  SetTorchThreads(2);  // as the denoiser does at start-up
  for (const char* bundle : {"tinyconv", "textlatent"}) {
    SCOPED_TRACE(bundle);
    auto model = DenoiserModel::Load(std::string(fixtures) + "/" + bundle, {"cpu"});
    ASSERT_TRUE(model.ok()) << model.status();
    DenoiserModel& m = **model;
    const int rows = 6;
    const size_t numel = static_cast<size_t>(m.latent_numel());
    std::vector<float> x(rows * numel);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 211) / 100.0f - 1;
    std::vector<float> t = {999, 800, 500, 250, 20, 1};
    std::vector<int64_t> cond(rows, m.manifest().null_label);
    std::vector<float> encodings;
    if (m.tokenizer()) {
      encodings.resize(rows * m.encoding_size());
      std::vector<int64_t> ids;
      for (int r = 0; r < rows; ++r) {
        const std::vector<int64_t> one = m.tokenizer()->Padded(m.tokenizer()->Encode(r % 2 ? "a cat" : ""));
        ids.insert(ids.end(), one.begin(), one.end());
      }
      ASSERT_TRUE(m.EncodeText(ids, rows, absl::MakeSpan(encodings)).ok());
    }
    auto forward = [&](int begin, int count, std::vector<float>& out) {
      auto o = absl::MakeSpan(out).subspan(begin * numel, count * numel);
      auto xs = absl::MakeConstSpan(x).subspan(begin * numel, count * numel);
      auto ts = absl::MakeConstSpan(t).subspan(begin, count);
      if (encodings.empty()) {
        return m.Forward(xs, ts, absl::MakeConstSpan(cond).subspan(begin, count), count, o);
      }
      const size_t per = m.encoding_size();
      return m.ForwardText(xs, ts, absl::MakeConstSpan(encodings).subspan(begin * per, count * per),
                           {}, count, o);
    };
    ForwardWorkers workers({.cores = 2, .min_chunk_rows = 1});
    std::vector<float> together(rows * numel), alone(rows * numel);
    for (int round = 0; round < 20; ++round) {
      ASSERT_TRUE(workers
                      .Run(rows,
                           [&](int b, int n) {
                             const absl::Status s = forward(b, n, together);
                             // Torch's first parallel op on a thread sets its
                             // OpenMP count to the global one; the chunk's
                             // share must outlast it.
                             EXPECT_EQ(omp_get_max_threads(), 1) << "round " << round;
                             return s;
                           })
                      .ok());
      SetThisThreadTorchThreads(1);
      for (const ForwardWorkers::Chunk& c : workers.Split(rows)) {
        ASSERT_TRUE(forward(c.begin, c.count, alone).ok());
      }
      ASSERT_EQ(together, alone) << "round " << round;
    }
  }
}

}  // namespace
}  // namespace dgrid
