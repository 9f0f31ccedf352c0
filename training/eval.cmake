# dgrid-eval: measures a bundle's samples (accuracy, Fréchet distance, the
# speciation curve). Same layering as dgrid-train: dgrid_eval_report (JSON
# via protobuf's Struct, Cairo plot) never sees torch's include directories;
# dgrid_eval (engine, classifier, Fréchet distance) never includes a *.pb.h.
if(NOT TARGET PkgConfig::CAIRO)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(CAIRO REQUIRED IMPORTED_TARGET cairo)
endif()

add_library(dgrid_eval STATIC evaluation.cc frechet.cc sample_classifier.cc)
target_include_directories(dgrid_eval PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(dgrid_eval
  PUBLIC dgrid_engine dgrid_training_io absl::status absl::statusor absl::span
  PRIVATE ${TORCH_LIBRARIES} absl::strings absl::str_format absl::time)

add_library(dgrid_eval_report STATIC eval_report.cc speciation_plot.cc)
target_include_directories(dgrid_eval_report PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(dgrid_eval_report
  PUBLIC absl::status absl::statusor
  PRIVATE protobuf::libprotobuf PkgConfig::CAIRO absl::strings absl::str_format)

# torch reaches the binary through dgrid_eval (link only), so eval_main.cc
# compiles without torch's headers.
add_executable(dgrid-eval eval_main.cc)
target_link_libraries(dgrid-eval PRIVATE dgrid_eval dgrid_eval_report absl::flags
  absl::flags_parse absl::flags_usage absl::strings)

add_executable(dgrid_frechet_test frechet_test.cc)
target_link_libraries(dgrid_frechet_test PRIVATE dgrid_eval GTest::gtest_main)
gtest_discover_tests(dgrid_frechet_test PROPERTIES LABELS unit)

# A tiny dgrid-eval run on the shipped bundle (skips without the dataset).
add_executable(dgrid_eval_smoke_test eval_smoke_test.cc)
target_compile_definitions(dgrid_eval_smoke_test PRIVATE
  DGRID_EVAL_BINARY="$<TARGET_FILE:dgrid-eval>"
  DGRID_BUNDLE="${PROJECT_SOURCE_DIR}/models/fashion-mnist")
target_link_libraries(dgrid_eval_smoke_test PRIVATE protobuf::libprotobuf GTest::gtest_main)
add_dependencies(dgrid_eval_smoke_test dgrid-eval)
gtest_discover_tests(dgrid_eval_smoke_test PROPERTIES LABELS training TIMEOUT 60)

# The committed bundle: valid manifest, files present, and a short sampling
# run at the shipped defaults draws the requested class.
add_executable(dgrid_shipped_bundle_test shipped_bundle_test.cc)
target_compile_definitions(dgrid_shipped_bundle_test PRIVATE
  DGRID_BUNDLE="${PROJECT_SOURCE_DIR}/models/fashion-mnist")
target_link_libraries(dgrid_shipped_bundle_test PRIVATE dgrid_eval dgrid_common GTest::gtest_main)
gtest_discover_tests(dgrid_shipped_bundle_test PROPERTIES LABELS training TIMEOUT 120)

# The committed emoji bundle through the real stack (two denoisers and an
# orchestrator on loopback): size and licences in the manifest, the C++
# tokenizer against the word list training used, then 24 two-row grids of
# prompts naming emoji, scored by the bundle's classifier: the subcategory
# must match in at least 0.2 of the 120 samples (chance 0.01; the shipped
# bundle measures 0.325 here, 0.56 in the full evaluation) and the style in
# 0.75 (chance 0.5; measured 0.92). An untrained bundle scores 0.0 and 0.5.
# training/emoji/evaluate.py without --quick is the full
# evaluation (it needs training/emoji/fetch.sh's data).
add_test(NAME emoji_bundle_quick
  COMMAND ${DGRID_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/emoji/evaluate.py
    --model ${PROJECT_SOURCE_DIR}/models/emoji --build ${CMAKE_BINARY_DIR}
    --quick 24 --min_subcategory 0.2 --min_style 0.75)
set_tests_properties(emoji_bundle_quick PROPERTIES
  LABELS training
  TIMEOUT 300
  RUN_SERIAL TRUE
  ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1")
