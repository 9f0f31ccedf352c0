#include "common/server_main.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace dgrid {
namespace {

// The port file appears whole, or the server is told it cannot: it used to
// go on serving while the scripts waiting for the file waited for ever.
TEST(PortFileTest, IsWrittenWholeOrRefused) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("dgrid-ports-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "server.ports").string();
  ASSERT_TRUE(WritePortFile(path, {{"grpc", 5}, {"metrics", 6}}).ok());
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  EXPECT_EQ(text.str(), "grpc=5\nmetrics=6\n");
  const absl::Status refused = WritePortFile((dir / "missing" / "server.ports").string(), {});
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("--port_file: cannot write"), absl::string_view::npos);
  EXPECT_TRUE(WritePortFile("", {}).ok());
  size_t files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++files;
  EXPECT_EQ(files, 1u);  // no temporary file left
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dgrid
