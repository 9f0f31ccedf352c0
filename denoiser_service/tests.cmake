# Unit tests of the engine and the gRPC adapter. They use fixtures that
# tests/fixtures/make_fixtures.py writes with Debian's python3-torch (the
# ctest fixture "python_fixtures", defined in tests/CMakeLists.txt).
add_executable(engine_test
  engine/ddim_schedule_test.cc engine/euler_ancestral_test.cc engine/trajectory_batcher_test.cc
  engine/hostile_bundle_test.cc engine/batch_choice_test.cc engine/context_cache_test.cc
  engine/forward_workers_test.cc)
target_link_libraries(engine_test PRIVATE dgrid_engine OpenMP::OpenMP_CXX GTest::gtest_main)
gtest_discover_tests(engine_test DISCOVERY_TIMEOUT 30
  PROPERTIES LABELS unit FIXTURES_REQUIRED engine_fixtures
             ENVIRONMENT DGRID_FIXTURES=${DGRID_FIXTURE_DIR})

add_executable(denoiser_server_test server/denoiser_server_test.cc)
target_link_libraries(denoiser_server_test PRIVATE dgrid_denoiser_server grpc_std_proto GTest::gtest_main)
gtest_discover_tests(denoiser_server_test DISCOVERY_TIMEOUT 30
  PROPERTIES LABELS unit FIXTURES_REQUIRED python_fixtures
             ENVIRONMENT DGRID_FIXTURES=${DGRID_FIXTURE_DIR})

# The engine's field names to the wire's; no model.
add_executable(wire_fields_test server/wire_fields_test.cc)
target_link_libraries(wire_fields_test PRIVATE dgrid_denoiser_server GTest::gtest_main)
gtest_discover_tests(wire_fields_test DISCOVERY_TIMEOUT 30 PROPERTIES LABELS unit)

# The Judge RPC on the shipped bundles (models/), no fixtures.
add_executable(judge_rpc_test server/judge_rpc_test.cc)
target_link_libraries(judge_rpc_test PRIVATE dgrid_denoiser_server GTest::gtest_main)
target_compile_definitions(judge_rpc_test PRIVATE DGRID_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(judge_rpc_test PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)
