#include "hybridshard/service/events/event_json.h"

#include <gtest/gtest.h>

#include "hybridshard/core/error.h"
#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/launch/launcher.h"

namespace hybridshard::service {
namespace {

core::Event sample(core::EventType type) {
  core::Event event;
  event.type = type;
  event.time = 1764078990.25;
  event.rank = 3;
  event.iteration = 7;
  event.buffer = "train.params.pp1.vpp0";
  event.kind = core::BufferKind::kOptimizerState;
  event.dtype = core::DType::kFloat32;
  event.bytes = std::int64_t{5} << 32;  // past 32 bits on purpose
  event.from = core::Residency::kGpu;
  event.to = core::Residency::kCpu;
  event.shape = "[12 tensors] 4096 elems";
  event.path = core::TransferPath::kHostToDevice;
  event.peer = 2;
  event.seconds = 0.125;
  event.operation = "enter.round0.recv";
  event.phase = "enter";
  event.device_used = 123456789;
  event.device_total = 987654321;
  event.tracked = 12345;
  event.cached = 67890;
  event.cached_host = 4242;
  event.ok = false;
  event.detail = "token 3 differs";
  return event;
}

TEST(EventJsonTest, uses_the_record_format_type_names) {
  EXPECT_EQ(event_to_json(sample(core::EventType::kBufferCreated))["type"], "buffer_created");
  EXPECT_EQ(event_to_json(sample(core::EventType::kResidency))["type"], "residency");
  EXPECT_EQ(event_to_json(sample(core::EventType::kBufferDestroyed))["type"], "buffer_destroyed");
  EXPECT_EQ(event_to_json(sample(core::EventType::kTransfer))["type"], "transfer");
  EXPECT_EQ(event_to_json(sample(core::EventType::kPhaseBegin))["type"], "phase_begin");
  EXPECT_EQ(event_to_json(sample(core::EventType::kPhaseEnd))["type"], "phase_end");
  EXPECT_EQ(event_to_json(sample(core::EventType::kMemorySample))["type"], "memory");
  EXPECT_EQ(event_to_json(sample(core::EventType::kCheck))["type"], "check");
}

TEST(EventJsonTest, residency_event_carries_its_fields_by_name) {
  nlohmann::json json = event_to_json(sample(core::EventType::kResidency));
  EXPECT_EQ(json["rank"], 3);
  EXPECT_EQ(json["iteration"], 7);
  EXPECT_EQ(json["buffer"], "train.params.pp1.vpp0");
  EXPECT_EQ(json["kind"], "optimizer");
  EXPECT_EQ(json["dtype"], "fp32");
  EXPECT_EQ(json["bytes"], std::int64_t{5} << 32);
  EXPECT_EQ(json["from"], "gpu");
  EXPECT_EQ(json["to"], "cpu");
  EXPECT_FALSE(json.contains("path"));  // only the fields of its type
  EXPECT_FALSE(json.contains("device_used"));
}

TEST(EventJsonTest, every_engine_event_type_round_trips) {
  for (core::EventType type :
       {core::EventType::kBufferCreated, core::EventType::kResidency, core::EventType::kBufferDestroyed,
        core::EventType::kTransfer, core::EventType::kPhaseBegin, core::EventType::kPhaseEnd,
        core::EventType::kMemorySample, core::EventType::kCheck}) {
    nlohmann::json json = event_to_json(sample(type));
    // Through text, as on the wire.
    core::Event back = event_from_json(parse_event_line(event_line(json), 1));
    EXPECT_EQ(event_to_json(back), json) << json.dump();
    EXPECT_EQ(back.type, type);
    EXPECT_EQ(back.rank, 3);
    EXPECT_EQ(back.iteration, 7);
    EXPECT_DOUBLE_EQ(back.time, 1764078990.25);
  }
  core::Event check = event_from_json(event_to_json(sample(core::EventType::kCheck)));
  EXPECT_EQ(check.operation, "enter.round0.recv");  // the check's name travels in operation
  EXPECT_FALSE(check.ok);
  EXPECT_EQ(check.detail, "token 3 differs");
}

TEST(EventJsonTest, memory_sample_carries_the_cached_kind_and_old_records_without_it_read_as_none_cached) {
  nlohmann::json json = event_to_json(sample(core::EventType::kMemorySample));
  EXPECT_EQ(json["cached"], 67890);
  EXPECT_EQ(json["cached_host"], 4242);
  json.erase("cached");
  json.erase("cached_host");
  const core::Event old = event_from_json(json);
  EXPECT_EQ(old.cached, 0);
  EXPECT_EQ(old.cached_host, 0);
  EXPECT_EQ(old.tracked, 12345);
  json["cached"] = "12";
  EXPECT_THROW(event_from_json(json), core::Error);
}

TEST(EventJsonTest, missing_field_is_an_error_naming_it) {
  nlohmann::json json = event_to_json(sample(core::EventType::kTransfer));
  json.erase("bytes");
  try {
    event_from_json(json);
    FAIL() << "no error";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("'bytes'"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("transfer"), std::string::npos) << error.what();
  }
}

TEST(EventJsonTest, wrong_types_and_unknown_names_are_errors) {
  nlohmann::json json = event_to_json(sample(core::EventType::kResidency));
  json["bytes"] = "12";
  EXPECT_THROW(event_from_json(json), core::Error);
  json = event_to_json(sample(core::EventType::kResidency));
  json["to"] = "disk";
  EXPECT_THROW(event_from_json(json), core::Error);
  json = event_to_json(sample(core::EventType::kResidency));
  json["kind"] = "weights";
  EXPECT_THROW(event_from_json(json), core::Error);
  json = event_to_json(sample(core::EventType::kResidency));
  json["bytes"] = -1;
  EXPECT_THROW(event_from_json(json), core::Error);
  json = event_to_json(sample(core::EventType::kTransfer));
  json["path"] = "carrier_pigeon";
  EXPECT_THROW(event_from_json(json), core::Error);
  EXPECT_THROW(event_from_json(nlohmann::json::array()), core::Error);
  EXPECT_THROW(event_from_json(nlohmann::json{{"type", "job"}, {"time", 1.0}}), core::Error);
}

TEST(EventJsonTest, launcher_events_validate_and_carry_their_fields) {
  nlohmann::json up = event_to_json(rank_up_event(2, "node-a", 4242, "cuda:2", 10.5));
  EXPECT_NO_THROW(decode_event(up));
  EXPECT_EQ(up["type"], "rank_up");
  EXPECT_EQ(up["host"], "node-a");
  EXPECT_EQ(up["pid"], 4242);
  EXPECT_EQ(up["device"], "cuda:2");

  nlohmann::json down = event_to_json(rank_down_event(2, "node-a", "killed by signal 9", "enter", 11.0));
  EXPECT_NO_THROW(decode_event(down));
  EXPECT_EQ(down["reason"], "killed by signal 9");
  EXPECT_EQ(down["phase"], "enter");

  nlohmann::json end = event_to_json(job_end_event(false, "rank 2 on node-a died in enter", 12.5, 12.0));
  EXPECT_NO_THROW(decode_event(end));
  EXPECT_EQ(end["ok"], false);
  EXPECT_DOUBLE_EQ(end["seconds"].get<double>(), 12.5);
  EXPECT_FALSE(end.contains("rank"));

  down.erase("reason");
  EXPECT_THROW(decode_event(down), core::Error);
  up["rank"] = -1;
  EXPECT_THROW(decode_event(up), core::Error);
  EXPECT_THROW(decode_event({{"type", "party"}, {"time", 1.0}}), core::Error);
}

TEST(EventJsonTest, job_event_describes_the_job) {
  JobConfig job;
  job.file = "configs/quickstart.yaml";
  job.model.spec.architecture = core::Architecture::kQwen2;
  job.model.spec.num_hidden_layers = 6;
  job.model.spec.dtype = core::DType::kFloat32;
  job.train.tp = 2;
  job.train.pp = 2;
  job.train.vpp = 1;
  job.train.dp = 1;
  job.rollout.tp = 1;
  job.rollout.world_size = 4;
  job.runtime.world_size = 4;
  job.runtime.backend = BackendChoice::kGloo;
  job.schedule.iterations = 5;
  nlohmann::json json = event_to_json(job_event(job, 100.0));
  EXPECT_NO_THROW(decode_event(json));
  EXPECT_EQ(json["type"], "job");
  EXPECT_EQ(json["world_size"], 4);
  EXPECT_EQ(json["model"]["architecture"], "qwen2");
  EXPECT_EQ(json["model"]["num_hidden_layers"], 6);
  EXPECT_EQ(json["model"]["dtype"], "fp32");
  EXPECT_EQ(json["train"], (nlohmann::json{{"tp", 2}, {"pp", 2}, {"vpp", 1}, {"dp", 1}}));
  EXPECT_EQ(json["rollout"], (nlohmann::json{{"tp", 1}, {"dp", 4}}));
  EXPECT_EQ(json["backend"], "gloo");
  EXPECT_EQ(json["strategy"], "hybridshard");
  EXPECT_EQ(json["iterations"], 5);
  EXPECT_EQ(json["job_file"], "configs/quickstart.yaml");
}

TEST(EventJsonTest, malformed_line_names_its_number) {
  try {
    parse_event_line("{\"type\": \"transfer\", \"bytes\": 1", 17);
    FAIL() << "no error";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("line 17"), std::string::npos) << error.what();
  }
  EXPECT_THROW(parse_event_line("[1, 2]", 1), core::Error);
  EXPECT_THROW(parse_event_line("", 1), core::Error);
}

TEST(EventJsonTest, invalid_utf8_in_a_string_does_not_lose_the_event) {
  nlohmann::json json = event_to_json(sample(core::EventType::kCheck));
  json["detail"] = std::string("bad \xff byte");
  std::string line = event_line(json);
  EXPECT_EQ(parse_event_line(line, 1)["rank"], 3);
}

}  // namespace
}  // namespace hybridshard::service
