// The stall watchdog on a clock the test moves: no sleeps, and each test
// says exactly how long a call went without progress.
#include "common/stall_watchdog.h"

#include <future>
#include <mutex>

#include "gtest/gtest.h"

namespace dgrid {
namespace {

// A clock that moves only when told to; the watchdog's thread reads it too.
class FakeClock {
 public:
  absl::Time Now() {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
  }
  StallWatchdog::Clock clock() {
    return [this] { return Now(); };
  }

 private:
  std::mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1000);
};

const absl::Duration kTimeout = absl::Seconds(15);

TEST(StallWatchdogTest, ACallWithoutProgressPastTheTimeoutIsCancelledOnceAndReportedStalled) {
  FakeClock clock;
  StallWatchdog watchdog(kTimeout, clock.clock());
  int cancels = 0;
  const StallWatchdog::CallId call = watchdog.Watch([&] { ++cancels; });
  clock.Advance(kTimeout);
  EXPECT_EQ(watchdog.CancelStalled(), 0);  // at the timeout, not yet past it
  clock.Advance(absl::Milliseconds(1));
  EXPECT_EQ(watchdog.CancelStalled(), 1);
  clock.Advance(kTimeout * 2);
  EXPECT_EQ(watchdog.CancelStalled(), 0);
  EXPECT_EQ(cancels, 1);
  EXPECT_TRUE(watchdog.Unwatch(call));
}

TEST(StallWatchdogTest, ProgressRestartsTheClockSoASlowSteadyCallIsNeverCancelled) {
  FakeClock clock;
  StallWatchdog watchdog(kTimeout, clock.clock());
  int cancels = 0;
  const StallWatchdog::CallId call = watchdog.Watch([&] { ++cancels; });
  for (int i = 0; i < 10; ++i) {
    clock.Advance(absl::Seconds(14));
    watchdog.Touch(call);
    EXPECT_EQ(watchdog.CancelStalled(), 0);
  }
  EXPECT_EQ(cancels, 0);
  EXPECT_FALSE(watchdog.Unwatch(call));
}

TEST(StallWatchdogTest, EachCallHasItsOwnClock) {
  FakeClock clock;
  StallWatchdog watchdog(kTimeout, clock.clock());
  bool stuck_cancelled = false, moving_cancelled = false;
  const StallWatchdog::CallId stuck = watchdog.Watch([&] { stuck_cancelled = true; });
  clock.Advance(absl::Seconds(10));
  const StallWatchdog::CallId moving = watchdog.Watch([&] { moving_cancelled = true; });
  clock.Advance(absl::Seconds(10));
  watchdog.Touch(moving);
  EXPECT_EQ(watchdog.CancelStalled(), 1);
  EXPECT_TRUE(stuck_cancelled);
  EXPECT_FALSE(moving_cancelled);
  EXPECT_TRUE(watchdog.Unwatch(stuck));
  EXPECT_FALSE(watchdog.Unwatch(moving));
}

TEST(StallWatchdogTest, AnUnwatchedCallIsNeverCancelled) {
  // The executor unwatches a call before its ClientContext goes away.
  FakeClock clock;
  StallWatchdog watchdog(kTimeout, clock.clock());
  bool cancelled = false;
  EXPECT_FALSE(watchdog.Unwatch(watchdog.Watch([&] { cancelled = true; })));
  clock.Advance(kTimeout * 2);
  EXPECT_EQ(watchdog.CancelStalled(), 0);
  EXPECT_FALSE(cancelled);
}

TEST(StallWatchdogTest, ItsThreadCancelsAStalledCallUntilStopped) {
  FakeClock clock;
  StallWatchdog watchdog(kTimeout, clock.clock());
  ASSERT_TRUE(watchdog.Start().ok());
  std::promise<void> cancelled;
  const StallWatchdog::CallId call = watchdog.Watch([&] { cancelled.set_value(); });
  clock.Advance(kTimeout + absl::Seconds(1));
  // Waits for the event itself (ctest's timeout bounds a watchdog that never
  // fires); set_value twice would throw, so this also checks "once".
  cancelled.get_future().wait();
  EXPECT_TRUE(watchdog.Unwatch(call));
  watchdog.Stop();
  watchdog.Stop();
}

}  // namespace
}  // namespace dgrid
