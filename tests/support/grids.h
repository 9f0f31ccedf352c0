// Grids through a Stack's orchestrator, for the process tests that compare
// cells byte for byte. Header-only: it reports with gtest's EXPECT, which the
// support library does not link.
//
//   const v1::Grid grid = MustCreateGrid(*stack, request);
//   EXPECT_EQ(CellImages(grid), CellImages(other));
#ifndef DGRID_TESTS_SUPPORT_GRIDS_H_
#define DGRID_TESTS_SUPPORT_GRIDS_H_

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "dgrid/v1/orchestrator.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/support/pixel_drift.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace testing {

// A fixture bundle written by tests/fixtures/make_fixtures.py (ctest sets
// DGRID_FIXTURES), e.g. FixtureDir("textlatent").
inline std::string FixtureDir(const std::string& name) {
  const char* dir = std::getenv("DGRID_FIXTURES");
  return absl::StrCat(dir ? dir : "build/fixtures", "/", name);
}

// A stack serving one bundle: `denoisers` replicas of it, the orchestrator
// with `orchestrator_flags` (e.g. {"--cache_mb=0"}).
inline StackOptions ServingStack(const std::string& model_dir, int denoisers = 1,
                                 std::vector<std::string> orchestrator_flags = {}) {
  StackOptions options;
  options.model_dir = model_dir;
  options.denoisers = denoisers;
  options.orchestrator_flags = std::move(orchestrator_flags);
  return options;
}

// CreateGrid within two minutes; an error fails the test (the grid is then
// empty).
inline v1::Grid MustCreateGrid(const Stack& stack, const v1::GridRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  v1::Grid grid;
  const grpc::Status status = stack.Orchestrator()->CreateGrid(&context, request, &grid);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return grid;
}

// Every cell's image, row by row.
inline std::vector<std::string> CellImages(const v1::Grid& grid) {
  std::vector<std::string> cells;
  for (const v1::GridRow& row : grid.rows()) {
    for (const v1::GridCell& cell : row.cells()) cells.push_back(cell.png());
  }
  return cells;
}

// A test suite's one stack, started before its first test and stopped after
// its last. `Suite` names it and gives its options:
//
//   class MyGridTest : public SharedStackTest<MyGridTest> {
//    public:
//     static constexpr char kName[] = "my";
//     static StackOptions Options();
//   };
//   TEST_F(MyGridTest, ...) { MustCreateGrid(*stack_, request); }
template <typename Suite>
class SharedStackTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto stack = Stack::Start(Suite::Options(), Suite::kName);
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
  }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  static inline Stack* stack_ = nullptr;
};

// Runs `request` on a stack of one replica and on one of two, each with the
// cache off, and checks that the grid is the same: every cell's image equal,
// up to the forward pass's float drift across batch compositions (the one
// replica has two threads, so its passes run as parallel chunks,
// engine/forward_workers.h; the two have one each). The images have come
// out byte for byte on AVX-512 CPUs; with AVX2 OpenBLAS (an AMD EPYC) a
// matrix product rounds differently by size and a pixel may move a level.
// Different noise moves pixels far past kDriftTolerance. Returns the cells
// compared.
inline size_t ExpectSameCellsOnOneAndTwoReplicas(const std::string& model_dir,
                                                 const v1::GridRequest& request,
                                                 const std::string& name) {
  std::vector<std::vector<std::string>> results;
  for (int denoisers : {1, 2}) {
    StackOptions options = ServingStack(model_dir, denoisers, {"--cache_mb=0"});
    options.denoiser_threads = denoisers == 1 ? 2 : 1;
    auto stack = Stack::Start(options, absl::StrCat(name, "-", denoisers));
    EXPECT_TRUE(stack.ok()) << stack.status();
    if (!stack.ok()) return 0;
    const v1::Grid grid = MustCreateGrid(**stack, request);
    // On two, both replicas ran the trunk or cells: else the second list
    // would only be the first one's again.
    std::set<std::string> sources = {grid.trunk().source()};
    for (const v1::GridRow& row : grid.rows()) {
      for (const v1::GridCell& cell : row.cells()) sources.insert(cell.source());
    }
    EXPECT_EQ(sources.size(), static_cast<size_t>(denoisers)) << absl::StrJoin(sources, ", ");
    results.push_back(CellImages(grid));
  }
  if (results.size() != 2 || results[0].size() != results[1].size()) {
    ADD_FAILURE() << "no two grids of as many cells to compare";
    return 0;
  }
  int worst = 0;
  size_t identical = 0;
  for (size_t i = 0; i < results[0].size(); ++i) {
    identical += results[0][i] == results[1][i];
    worst = std::max(worst, MaxPixelDrift(results[0][i], results[1][i]));
  }
  // The tolerance tells cells apart: every other cell of the grid is
  // further from the first than the drift allowed.
  int nearest_other = 256;
  for (size_t i = 1; i < results[0].size(); ++i) {
    nearest_other = std::min(nearest_other, MaxPixelDrift(results[0][0], results[0][i]));
  }
  std::cout << name << ": " << identical << " of " << results[0].size()
            << " cells byte for byte on one and two replicas; largest drift " << worst
            << " levels; the nearest other cell " << nearest_other << " levels away\n";
  EXPECT_LE(worst, kDriftTolerance);
  EXPECT_GT(nearest_other, kDriftTolerance);
  return results[0].size();
}

}  // namespace testing
}  // namespace dgrid

#endif  // DGRID_TESTS_SUPPORT_GRIDS_H_
