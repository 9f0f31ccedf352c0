// Writes a model bundle's manifest.json (the schema is
// proto/dgrid/v1/manifest.proto) from plain C++ values. This header is free of
// torch and protobuf so that the torch side of training can call it; the
// protobuf JSON mapping lives only in bundle_writer.cc (see
// docs/ARCHITECTURE.md, "Layering").
//
//   BundleManifest m = FashionMnistManifest();
//   m.training.final_loss = 0.031;
//   absl::Status s = WriteManifest(m, "models/fashion-mnist/manifest.json");
#ifndef DGRID_TRAINING_BUNDLE_WRITER_H_
#define DGRID_TRAINING_BUNDLE_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace dgrid::training {

struct BundleManifest {
  std::string name;
  std::string version;
  std::string description;
  std::vector<int64_t> latent_shape;  // [C, H, W]
  std::vector<int64_t> image_shape;   // [H, W, C]
  std::string weights;
  std::string timestep_dtype = "long";
  struct Schedule {
    std::string beta_schedule = "linear";
    double beta_start = 1e-4;
    double beta_end = 0.02;
    int32_t train_timesteps = 1000;
    std::string prediction_type = "epsilon";
    int32_t steps_offset = 1;
    bool set_alpha_to_one = false;
  } schedule;
  std::vector<std::string> class_labels;
  int64_t null_label = 0;
  std::string decoder_kind = "identity";
  std::vector<double> value_range = {-1.0, 1.0};
  struct Defaults {
    int32_t steps = 50;
    double eta = 1.0;
    double guidance = 1.0;
    std::string spacing = "leading";
  } defaults;
  std::string dataset;
  std::string license;
  std::string data_source;
  struct Training {
    std::string command;
    int32_t epochs = 0;
    uint64_t seed = 0;
    double final_loss = 0;
    std::string hardware;
    double train_seconds = 0;
    int64_t parameters = 0;
    double ms_per_image_forward_b32 = 0;
  } training;
  std::string classifier;  // empty: no classifier in the bundle
};

// The fixed facts of the shipped Fashion-MNIST bundle: shapes, schedule,
// labels, decoder, sampler defaults and data licence. The trainer fills in the
// training record.
BundleManifest FashionMnistManifest();

// Serialises `manifest` with protobuf's JSON mapping (snake_case names) and
// writes it to `path` atomically (temp file, then rename).
absl::Status WriteManifest(const BundleManifest& manifest, const std::string& path);

// Sets the `classifier` field of an existing manifest.json, and declares the
// same file as the bundle's judge with one head, "class", whose labels are
// the manifest's class labels (dgrid-train's classifier returns
// (logits, features)); the rest stays as it is (the classifier may be
// trained after the denoiser).
absl::Status SetManifestClassifier(const std::string& manifest_path,
                                   const std::string& classifier_file);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_BUNDLE_WRITER_H_
