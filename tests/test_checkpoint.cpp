// Checkpoints: bit-exact round trips of model, optimizer and run state in both phases and
// every embeddings mode; the atomic save, `latest` and retention; choosing the checkpoint to
// resume from; one-line errors for truncated, foreign, corrupt, wrong-version and mismatched
// files; and the config comparisons for resuming.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "backend/ops.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/fletcher32.h"
#include "checkpoint/h5.h"
#include "core/errors.h"
#include "core/rng.h"
#include "model/llama.h"
#include "optim/adamw.h"
#include "test_util.h"

namespace relora {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

Config tiny_config(const std::string& embeddings, int hidden_size = 8) {
  return config_from_overrides({"model.vocab_size=13", "model.hidden_size=" + std::to_string(hidden_size),
                                "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=12",
                                "model.seq_len=5", "relora.rank=3", "relora.alpha=6",
                                "relora.embeddings=" + embeddings, "train.global_batch=1",
                                "train.micro_batch=1"});
}

// A model in a given phase with every value drawn from `seed`, and (with_state) Adam state
// for every trainable tensor but the last, which then has none yet.
struct TrainedModel {
  Config cfg;
  std::unique_ptr<Ops> ops = make_cpu_ops();
  std::unique_ptr<Llama> model;
  AdamW optimizer;

  TrainedModel(const Config& config, bool relora_phase, uint64_t seed, bool with_state = true)
      : cfg(config), model(std::make_unique<Llama>(cfg.model, cfg.relora, *ops, 1)),
        optimizer(cfg.optimizer, *ops) {
    model->init_weights(seed);
    if (relora_phase) model->enter_relora_phase({seed, 7});
    for (Param* p : model->params()) {
      fill_normal(p->value.data(), p->value.numel(), 0.0f, 0.5f, {seed, RngPurpose::test, tensor_id(p->name), 1});
    }
    if (!with_state) return;
    const std::vector<Param*> trainable = model->trainable();
    for (size_t i = 0; i + 1 < trainable.size(); ++i) {
      AdamState& s = optimizer.state_for(*trainable[i]);
      const uint32_t id = tensor_id(trainable[i]->name);
      fill_normal(s.exp_avg.data(), s.exp_avg.numel(), 0.0f, 1e-3f, {seed, RngPurpose::test, id, 2});
      fill_uniform(s.exp_avg_sq.data(), s.exp_avg_sq.numel(), 0.0f, 1e-6f, {seed, RngPurpose::test, id, 3});
      s.step = 40 + static_cast<int64_t>(i);
    }
  }
};

RunState sample_state(const TrainedModel& run) {
  RunState s;
  s.step = 1234;
  s.tokens_seen = 987654321012;
  s.cycle = 3;
  s.restarts = 2;
  s.relora_phase = run.model->relora_phase();
  s.world_size = 8;
  s.config_yaml = config_to_yaml(run.cfg);
  s.tokenizer_path = "data/tiny/tokenizer.model";
  s.tokenizer_checksum = "sha256:0123abcd";
  s.data_cursor = 4321;
  s.data_epoch = 1;
  s.shuffle_seed = 0xfedcba9876543210ull;
  s.shard_paths = {"data/tiny/train_000000.bin", "data/tiny/train_000001.bin"};
  s.shard_tokens = {860123, 5};
  s.rng_seed = 0x8000000000000001ull;
  return s;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

// The message of the InputError that `action` must throw; it must be one line.
std::string input_error(const std::function<void()>& action) {
  try {
    action();
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << "not one line: " << message;
    return message;
  }
  ADD_FAILURE() << "expected an InputError";
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' missing from: " << text;
}

void truncate_to_half(const std::string& path) {
  ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(fs::file_size(path) / 2)), 0);
}

// Saves `run` and loads it into a fresh model in the same phase (adapters drawn differently),
// then demands identical bits everywhere.
void expect_round_trip(const TrainedModel& run, const std::string& path) {
  const RunState state = sample_state(run);
  const SaveStats stats = save_checkpoint(path, state, *run.model, run.optimizer);
  EXPECT_EQ(stats.bytes, static_cast<int64_t>(fs::file_size(path)));
  EXPECT_GE(stats.seconds, 0.0);

  const RunState loaded_state = read_run_state(path);
  TrainedModel fresh(run.cfg, loaded_state.relora_phase, 99, false);
  read_tensors(path, *fresh.model, fresh.optimizer);

  ASSERT_EQ(fresh.model->params().size(), run.model->params().size());
  for (size_t i = 0; i < run.model->params().size(); ++i) {
    const Param* want = run.model->params()[i];
    const Param* got = fresh.model->params()[i];
    EXPECT_EQ(got->name, want->name);
    EXPECT_TRUE(same_bits(got->value, want->value)) << want->name;
  }
  for (const Param* p : run.model->trainable()) {
    const AdamState* got = fresh.optimizer.state(p->name);
    ASSERT_NE(got, nullptr) << p->name;
    const auto want = run.optimizer.states().find(p->name);
    if (want == run.optimizer.states().end()) {  // no state yet: loads as the zero state
      EXPECT_EQ(got->step, 0) << p->name;
      const Tensor zero = Tensor::zeros(p->value.shape());
      EXPECT_TRUE(same_bits(got->exp_avg, zero) && same_bits(got->exp_avg_sq, zero)) << p->name;
    } else {
      EXPECT_EQ(got->step, want->second.step) << p->name;
      EXPECT_TRUE(same_bits(got->exp_avg, want->second.exp_avg)) << p->name;
      EXPECT_TRUE(same_bits(got->exp_avg_sq, want->second.exp_avg_sq)) << p->name;
    }
  }
  EXPECT_EQ(fresh.optimizer.states().size(), run.model->trainable().size());

  EXPECT_EQ(loaded_state.step, state.step);
  EXPECT_EQ(loaded_state.tokens_seen, state.tokens_seen);
  EXPECT_EQ(loaded_state.cycle, state.cycle);
  EXPECT_EQ(loaded_state.restarts, state.restarts);
  EXPECT_EQ(loaded_state.relora_phase, state.relora_phase);
  EXPECT_EQ(loaded_state.world_size, state.world_size);
  EXPECT_EQ(loaded_state.config_yaml, state.config_yaml);
  EXPECT_EQ(loaded_state.created_utc.size(), std::string("2024-05-20T12:34:56Z").size());
  EXPECT_EQ(loaded_state.relora_version, RELORA_VERSION);
  EXPECT_EQ(loaded_state.tokenizer_path, state.tokenizer_path);
  EXPECT_EQ(loaded_state.tokenizer_checksum, state.tokenizer_checksum);
  EXPECT_EQ(loaded_state.data_manifest_path, "");
  EXPECT_EQ(loaded_state.data_manifest_checksum, "");
  EXPECT_EQ(loaded_state.data_cursor, state.data_cursor);
  EXPECT_EQ(loaded_state.data_epoch, state.data_epoch);
  EXPECT_EQ(loaded_state.shuffle_seed, state.shuffle_seed);
  EXPECT_EQ(loaded_state.shard_paths, state.shard_paths);
  EXPECT_EQ(loaded_state.shard_tokens, state.shard_tokens);
  EXPECT_EQ(loaded_state.rng_seed, state.rng_seed);
}

TEST(Checkpoint, RoundTripFullRankPhase) {
  TempDir dir;
  const TrainedModel run(tiny_config("lora"), false, 1);
  expect_round_trip(run, dir.file("full.h5"));
}

TEST(Checkpoint, RoundTripReloraPhaseEveryEmbeddingsMode) {
  TempDir dir;
  for (const char* embeddings : {"lora", "frozen", "full"}) {
    SCOPED_TRACE(embeddings);
    const TrainedModel run(tiny_config(embeddings), true, 2);
    expect_round_trip(run, dir.file(std::string(embeddings) + ".h5"));
  }
}

// Empty lists (no shards recorded) are empty attributes and read back empty.
TEST(Checkpoint, EmptyShardListRoundTrips) {
  TempDir dir;
  const TrainedModel run(tiny_config("lora"), false, 1);
  RunState state = sample_state(run);
  state.shard_paths.clear();
  state.shard_tokens.clear();
  save_checkpoint(dir.file("empty.h5"), state, *run.model, run.optimizer);
  const RunState loaded = read_run_state(dir.file("empty.h5"));
  EXPECT_TRUE(loaded.shard_paths.empty());
  EXPECT_TRUE(loaded.shard_tokens.empty());
}

TEST(Checkpoint, SaveIsAtomicAndLatestNamesIt) {
  TempDir dir;
  const TrainedModel run(tiny_config("lora"), true, 3);
  const std::string name = checkpoint_name(1234);
  EXPECT_EQ(name, "step_00001234.h5");
  save_checkpoint(dir.file(name), sample_state(run), *run.model, run.optimizer);
  publish_latest(dir.path(), name);
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir.path())) files.push_back(entry.path().filename());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"latest", name}));
  std::ifstream latest(dir.file("latest"));
  std::string text((std::istreambuf_iterator<char>(latest)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, name + "\n");
}

TEST(Checkpoint, RetentionKeepsTheNewestAndLatest) {
  TempDir dir;
  for (int step : {100, 200, 300, 400, 1000}) std::ofstream(dir.file(checkpoint_name(step))) << "x";
  std::ofstream(dir.file(checkpoint_name(500) + ".tmp")) << "interrupted save";
  std::ofstream(dir.file("metrics.jsonl")) << "{}";
  const auto files = [&] {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir.path())) names.push_back(entry.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  };
  // step 400 saved: the 3 newest up to it; the later 1000 (an abandoned continuation) stays
  publish_latest(dir.path(), checkpoint_name(400));
  apply_retention(dir.path(), 3, 400);
  EXPECT_EQ(files(), (std::vector<std::string>{"latest", "metrics.jsonl", "step_00000200.h5",
                                               "step_00000300.h5", "step_00000400.h5", "step_00001000.h5"}));
  EXPECT_EQ(checkpoints_after(dir.path(), 300), (std::vector<std::string>{"step_00001000.h5", "step_00000400.h5"}));
  // `latest` is kept even when older than the others up to the step saved, and so is the
  // file saved, beyond `keep` if need be
  publish_latest(dir.path(), checkpoint_name(200));
  apply_retention(dir.path(), 1, 400);
  EXPECT_EQ(files(), (std::vector<std::string>{"latest", "metrics.jsonl", "step_00000200.h5", "step_00000400.h5",
                                               "step_00001000.h5"}));
  publish_latest(dir.path(), checkpoint_name(1000));
  apply_retention(dir.path(), 1, 1000);
  EXPECT_TRUE(fs::exists(dir.file("step_00001000.h5")));
  EXPECT_FALSE(fs::exists(dir.file("step_00000400.h5")));
  EXPECT_FALSE(fs::exists(dir.file("step_00000200.h5")));
  // the file saved is never deleted, whatever `latest` names, and `latest` after it takes
  // none of its slots
  for (int step : {10, 20, 30}) std::ofstream(dir.file(checkpoint_name(step))) << "x";
  apply_retention(dir.path(), 2, 20);
  EXPECT_EQ(files(), (std::vector<std::string>{"latest", "metrics.jsonl", "step_00000010.h5", "step_00000020.h5",
                                               "step_00000030.h5", "step_00001000.h5"}));
}

TEST(Checkpoint, FindResumeFallsBackPastBadCheckpoints) {
  TempDir dir;
  EXPECT_EQ(find_resume_checkpoint(dir.path()), "");
  EXPECT_EQ(find_resume_checkpoint(dir.file("no_such_dir")), "");
  // `latest` naming a file that is gone, and no checkpoint: nothing to resume, a fresh start
  publish_latest(dir.path(), checkpoint_name(99));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(find_resume_checkpoint(dir.path()), "");
  expect_contains(::testing::internal::GetCapturedStderr(), "names step_00000099.h5, which does not exist");
  const TrainedModel run(tiny_config("lora"), false, 4);
  for (int step : {10, 20, 30}) {
    save_checkpoint(dir.file(checkpoint_name(step)), sample_state(run), *run.model, run.optimizer);
  }
  // no `latest` (a crash before it was updated): the newest complete checkpoint
  EXPECT_EQ(find_resume_checkpoint(dir.path()), dir.file("step_00000030.h5"));
  // `latest` wins over newer files
  publish_latest(dir.path(), checkpoint_name(20));
  EXPECT_EQ(find_resume_checkpoint(dir.path()), dir.file("step_00000020.h5"));
  // the one `latest` names is truncated: the newest older one that validates, with a
  // warning; not the later step 30 (a continuation left behind by resuming step 20)
  truncate_to_half(dir.file("step_00000020.h5"));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(find_resume_checkpoint(dir.path()), dir.file("step_00000010.h5"));
  std::string warnings = ::testing::internal::GetCapturedStderr();
  expect_contains(warnings, "latest names a checkpoint that cannot be resumed from: checkpoint " +
                                dir.file("step_00000020.h5") + ": the file is truncated");
  // without `latest`, the newest that validates
  fs::remove(dir.file("latest"));
  truncate_to_half(dir.file("step_00000030.h5"));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(find_resume_checkpoint(dir.path()), dir.file("step_00000010.h5"));
  warnings = ::testing::internal::GetCapturedStderr();
  expect_contains(warnings, "warning: skipping checkpoint " + dir.file("step_00000030.h5") +
                                ": the file is truncated");
  // none can be resumed from: refused, not a fresh start that would overwrite the run
  truncate_to_half(dir.file("step_00000010.h5"));
  ::testing::internal::CaptureStderr();
  testing::expect_contains(testing::input_error_of([&] { find_resume_checkpoint(dir.path()); }),
                  {"--resume auto: none of the 3 checkpoint(s) it tried in " + dir.path() + " can be resumed from",
                   "--resume PATH", "another checkpoint.dir"});
  ::testing::internal::GetCapturedStderr();
}

// Writes a checkpoint of `run` to `path` and returns the path.
std::string saved(const TrainedModel& run, const std::string& path) {
  save_checkpoint(path, sample_state(run), *run.model, run.optimizer);
  return path;
}

// Applies `edit` to the checkpoint's file opened read-write.
void edit_file(const std::string& path, const std::function<void(hid_t)>& edit) {
  const h5::QuietErrors quiet;
  const h5::Id file(H5Fopen(path.c_str(), H5F_ACC_RDWR, h5::file_access().get()), H5Fclose);
  ASSERT_GE(file.get(), 0);
  edit(file.get());
}

TEST(Checkpoint, TruncatedOrForeignFilesAreRejected) {
  TempDir dir;
  TrainedModel run(tiny_config("lora"), false, 5);
  const std::string path = saved(run, dir.file("a.h5"));
  truncate_to_half(path);
  std::string message = input_error([&] { read_run_state(path); });
  expect_contains(message, "checkpoint " + path + ": the file is truncated");
  message = input_error([&] { read_tensors(path, *run.model, run.optimizer); });
  expect_contains(message, "checkpoint " + path + ": the file is truncated");

  std::ofstream(dir.file("text.h5")) << "not a checkpoint at all\n";
  expect_contains(input_error([&] { read_run_state(dir.file("text.h5")); }),
                  "checkpoint " + dir.file("text.h5") + ": not an HDF5 file");
  expect_contains(input_error([&] { read_run_state(dir.file("missing.h5")); }),
                  "checkpoint " + dir.file("missing.h5") + ": no such file");
}

TEST(Checkpoint, FormatAndVersionAreChecked) {
  TempDir dir;
  const TrainedModel run(tiny_config("lora"), false, 6);
  const std::string path = saved(run, dir.file("a.h5"));
  edit_file(path, [](hid_t file) {
    ASSERT_GE(H5Adelete(file, "format_version"), 0);
    h5::write_attribute(file, "format_version", int64_t{2});
  });
  expect_contains(input_error([&] { read_run_state(path); }),
                  "checkpoint " + path + ": format_version 2 is not one relora");
  edit_file(path, [](hid_t file) {
    ASSERT_GE(H5Adelete(file, "format"), 0);
    h5::write_attribute(file, "format", std::string("something-else"));
  });
  expect_contains(input_error([&] { read_run_state(path); }),
                  "checkpoint " + path + ": not a relora checkpoint (format is 'something-else'");
}

TEST(Checkpoint, FlippedDataByteIsAChecksumError) {
  TempDir dir;
  const TrainedModel run(tiny_config("lora"), true, 7);
  const std::string path = saved(run, dir.file("a.h5"));
  const std::string dataset = "/lora/model.layers.1.mlp.up_proj/B";
  haddr_t address = 0;
  {
    const h5::QuietErrors quiet;
    const h5::Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, h5::file_access().get()), H5Fclose);
    const h5::Id dset(H5Dopen2(file.get(), dataset.c_str(), H5P_DEFAULT), H5Dclose);
    ASSERT_GE(dset.get(), 0);
    hsize_t offset[2];
    unsigned filter_mask = 0;
    hsize_t size = 0;
    const h5::Id space(H5Dget_space(dset.get()), H5Sclose);
    ASSERT_GE(H5Dget_chunk_info(dset.get(), space.get(), 0, offset, &filter_mask, &address, &size), 0);
  }
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(static_cast<std::streamoff>(address + 5));
    const char byte = static_cast<char>(file.get() ^ 0x10);
    file.seekp(static_cast<std::streamoff>(address + 5));
    file.put(byte);
  }
  read_run_state(path);  // the attributes are intact
  TrainedModel fresh(run.cfg, true, 8);
  const std::string message = input_error([&] { read_tensors(path, *fresh.model, fresh.optimizer); });
  expect_contains(message, "checkpoint " + path + ": dataset " + dataset + " is corrupt (checksum mismatch)");
}

TEST(Checkpoint, ShapeOrLayoutMismatchNamesTheTensor) {
  TempDir dir;
  const TrainedModel run(tiny_config("lora"), false, 9);
  const std::string path = saved(run, dir.file("a.h5"));
  TrainedModel wider(tiny_config("lora", 16), false, 9);
  expect_contains(input_error([&] { read_tensors(path, *wider.model, wider.optimizer); }),
                  "checkpoint " + path + ": model shape differs from the checkpoint: "
                  "model.embed_tokens.weight is [13, 8] in the checkpoint, [13, 16] in the config");

  edit_file(path, [](hid_t file) { ASSERT_GE(H5Ldelete(file, "/weights/model.norm.weight", H5P_DEFAULT), 0); });
  TrainedModel same(run.cfg, false, 9);
  expect_contains(input_error([&] { read_tensors(path, *same.model, same.optimizer); }),
                  "checkpoint " + path + ": dataset /weights/model.norm.weight is missing");

  // a ReLoRA checkpoint whose adapters the model lacks (relora.targets changed)
  const TrainedModel relora_run(tiny_config("lora"), true, 10);
  const std::string relora_path = saved(relora_run, dir.file("b.h5"));
  Config fewer_targets = config_from_overrides({"model.vocab_size=13", "model.hidden_size=8",
                                                "model.num_layers=2", "model.num_heads=2",
                                                "model.intermediate_size=12", "model.seq_len=5",
                                                "relora.rank=3", "relora.targets=[q_proj]"});
  TrainedModel fewer(fewer_targets, true, 10);
  expect_contains(input_error([&] { read_tensors(relora_path, *fewer.model, fewer.optimizer); }),
                  "checkpoint " + relora_path + ": dataset /lora/model.layers.0.self_attn.k_proj/A has no "
                  "place in the model");
}

TEST(Checkpoint, DescribeListsStateAndTensors) {
  TempDir dir;
  const TrainedModel run(tiny_config("lora"), true, 11);
  const std::string path = saved(run, dir.file("a.h5"));
  const std::string text = describe_checkpoint(path);
  expect_contains(text, "step 1234, phase relora, cycle 3, restarts 2");
  expect_contains(text, "world size 8");
  expect_contains(text, "data/tiny/train_000000.bin  860123 tokens");
  expect_contains(text, "/weights/model.layers.0.mlp.up_proj.weight");
  expect_contains(text, "/lora/model.embed_tokens/A");
  expect_contains(text, "(scale 2)");
  expect_contains(text, "/optimizer/lm_head/B");
  expect_contains(text, "exp_avg, exp_avg_sq, step ");
  expect_contains(text, "    model:\n      vocab_size: 13");
  // in model order: the embedding before the first block, the head last
  EXPECT_LT(text.find("/weights/model.embed_tokens.weight"), text.find("/weights/model.layers.0."));
  EXPECT_LT(text.find("/weights/model.layers.1.mlp.down_proj.weight"), text.find("/weights/lm_head.weight"));
}

// HDF5's own Fletcher32 loop (H5_checksum_fletcher32), word by word, for even lengths.
uint32_t reference_fletcher32(const unsigned char* data, size_t bytes) {
  uint32_t sum1 = 0, sum2 = 0;
  for (size_t words = bytes / 2; words > 0;) {
    size_t block = words > 360 ? 360 : words;
    words -= block;
    do {
      sum1 += (static_cast<uint32_t>(data[0]) << 8) | data[1];
      data += 2;
      sum2 += sum1;
    } while (--block);
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  }
  sum1 = (sum1 & 0xffff) + (sum1 >> 16);
  sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  return (sum2 << 16) | sum1;
}

TEST(Checkpoint, Fletcher32MatchesHdf5) {
  std::vector<unsigned char> random(100000), ones(100000, 0xff);  // 0xff: the largest sums
  for (size_t i = 0; i < random.size(); ++i) {
    random[i] = static_cast<unsigned char>(uniform_at({1, RngPurpose::test, 0, 0}, i) * 256);
  }
  for (size_t bytes : {2, 4, 718, 720, 722, 1440, 99998, 100000}) {
    EXPECT_EQ(checkpoint_detail::fletcher32(random.data(), bytes), reference_fletcher32(random.data(), bytes)) << bytes;
    EXPECT_EQ(checkpoint_detail::fletcher32(ones.data(), bytes), reference_fletcher32(ones.data(), bytes)) << bytes;
  }
}

// Tensors of several chunks with a partial last one, written chunk by chunk with our
// checksums, read back (and verified) by HDF5's filter pipeline.
TEST(Checkpoint, MultiChunkTensorsReadBackThroughHdf5) {
  TempDir dir;
  const std::string path = dir.file("chunks.h5");
  const std::vector<std::vector<int64_t>> shapes = {{1001, 1100}, {1100003}, {3, 7}};
  std::vector<Tensor> tensors;
  for (const auto& shape : shapes) {
    tensors.push_back(Tensor::zeros(shape));
    fill_normal(tensors.back().data(), tensors.back().numel(), 0.0f, 1.0f, {5, RngPurpose::test, 0, tensors.size()});
  }
  const h5::QuietErrors quiet;
  {
    const h5::Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, h5::file_access().get()), H5Fclose);
    ASSERT_GE(file.get(), 0);
    h5::TensorWriter writer;
    for (size_t i = 0; i < tensors.size(); ++i) {
      writer.write(file.get(), "t" + std::to_string(i), tensors[i].shape(), tensors[i].data());
    }
  }
  const h5::Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, h5::file_access().get()), H5Fclose);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string name = "/t" + std::to_string(i);
    ASSERT_EQ(h5::dataset_shape(file.get(), name, "test"), tensors[i].shape());
    Tensor back = Tensor::zeros(tensors[i].shape());
    h5::read_tensor(file.get(), name, back.data(), "test");
    EXPECT_TRUE(same_bits(back, tensors[i])) << name;
  }
}

TEST(Checkpoint, ConfigComparisonForResume) {
  const Config base = tiny_config("lora");
  const Config stored = config_from_yaml_text(config_to_yaml(base), "stored config");
  EXPECT_TRUE(incompatible_keys(stored, base).empty());
  EXPECT_TRUE(changed_keys(stored, base).empty());

  Config now = base;
  now.train.steps = 600;
  now.optimizer.lr = 2e-3f;
  now.relora.targets = {"v_proj", "q_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  EXPECT_TRUE(incompatible_keys(stored, now).empty());
  EXPECT_EQ(changed_keys(stored, now),
            (std::vector<std::string>{"optimizer.lr 0.001 -> 0.002", "train.steps 10000 -> 600"}));

  now.model.hidden_size = 16;
  now.relora.rank = 4;
  now.relora.embeddings = "frozen";
  EXPECT_EQ(incompatible_keys(stored, now),
            (std::vector<std::string>{"model.hidden_size: checkpoint 8, config 16", "relora.rank: checkpoint 3, config 4",
                                      "relora.embeddings: checkpoint lora, config frozen"}));
  expect_contains(input_error([] { config_from_yaml_text("model:\n  hidden_sise: 8\n", "stored config"); }),
                  "stored config:2: unknown key 'model.hidden_sise'");
}

}  // namespace
}  // namespace relora
