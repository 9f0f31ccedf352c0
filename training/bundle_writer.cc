#include "bundle_writer.h"

#include <cstdio>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "dgrid/v1/manifest.pb.h"
#include "google/protobuf/util/json_util.h"

namespace dgrid::training {

BundleManifest FashionMnistManifest() {
  BundleManifest m;
  m.name = "fashion-mnist";
  m.version = "1";
  m.description =
      "Class-conditional DDPM UNet (epsilon prediction) on 28x28 Fashion-MNIST, trained by "
      "dgrid-train; cond = class index, or null_label for unconditional / classifier-free "
      "guidance.";
  m.latent_shape = {1, 28, 28};
  m.image_shape = {28, 28, 1};
  m.weights = "model.pt";
  m.class_labels = {"t-shirt", "trouser", "pullover", "dress",   "coat",
                    "sandal",  "shirt",   "sneaker",  "bag",     "ankle boot"};
  m.null_label = 10;
  m.defaults.guidance = 2.0;
  m.dataset = "Fashion-MNIST (Debian dataset-fashion-mnist)";
  m.license = "MIT";
  m.data_source = "https://github.com/zalandoresearch/fashion-mnist";
  return m;
}

namespace {

absl::Status WriteJson(const dgrid::v1::ModelManifest& proto, const std::string& path) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(proto, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("manifest to JSON: ", std::string(status.message())));
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << json;
    if (!out.flush()) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SetManifestClassifier(const std::string& manifest_path,
                                   const std::string& classifier_file) {
  std::ifstream in(manifest_path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", manifest_path));
  const std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  dgrid::v1::ModelManifest proto;
  auto status = google::protobuf::util::JsonStringToMessage(json, &proto);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(manifest_path, ": ", std::string(status.message())));
  }
  proto.set_classifier(classifier_file);
  dgrid::v1::ModelManifest::Judge* judge = proto.mutable_judge();
  judge->Clear();
  judge->set_weights(classifier_file);
  dgrid::v1::ModelManifest::JudgeHead* head = judge->add_heads();
  head->set_name("class");
  head->set_output(0);
  *head->mutable_labels() = proto.conditioning().class_labels();
  return WriteJson(proto, manifest_path);
}

absl::Status WriteManifest(const BundleManifest& m, const std::string& path) {
  dgrid::v1::ModelManifest proto;
  proto.set_name(m.name);
  proto.set_version(m.version);
  proto.set_description(m.description);
  for (int64_t d : m.latent_shape) proto.add_latent_shape(d);
  for (int64_t d : m.image_shape) proto.add_image_shape(d);
  proto.set_weights(m.weights);
  proto.set_timestep_dtype(m.timestep_dtype);

  auto* schedule = proto.mutable_schedule();
  schedule->set_beta_schedule(m.schedule.beta_schedule);
  schedule->set_beta_start(m.schedule.beta_start);
  schedule->set_beta_end(m.schedule.beta_end);
  schedule->set_train_timesteps(m.schedule.train_timesteps);
  schedule->set_prediction_type(m.schedule.prediction_type);
  schedule->set_steps_offset(m.schedule.steps_offset);
  schedule->mutable_set_alpha_to_one()->set_value(m.schedule.set_alpha_to_one);

  auto* cond = proto.mutable_conditioning();
  for (const std::string& label : m.class_labels) cond->add_class_labels(label);
  cond->set_null_label(m.null_label);

  auto* decoder = proto.mutable_decoder();
  decoder->set_kind(m.decoder_kind);
  for (double v : m.value_range) decoder->add_value_range(v);

  auto* defaults = proto.mutable_defaults();
  defaults->set_steps(m.defaults.steps);
  defaults->set_eta(m.defaults.eta);
  defaults->set_guidance(m.defaults.guidance);
  defaults->set_spacing(m.defaults.spacing);

  auto* data = proto.mutable_data();
  data->set_dataset(m.dataset);
  data->set_license(m.license);
  data->set_source(m.data_source);

  auto* training = proto.mutable_training();
  training->set_command(m.training.command);
  training->set_epochs(m.training.epochs);
  training->set_seed(m.training.seed);
  training->set_final_loss(m.training.final_loss);
  training->set_hardware(m.training.hardware);
  training->set_train_seconds(m.training.train_seconds);
  training->set_parameters(m.training.parameters);
  training->set_ms_per_image_forward_b32(m.training.ms_per_image_forward_b32);
  proto.set_classifier(m.classifier);

  return WriteJson(proto, path);
}

}  // namespace dgrid::training
