#include "hybridshard/core/events.h"

#include <gtest/gtest.h>

#include <thread>

namespace hybridshard::core {
namespace {

TEST(EventsTest, names_match_the_record_format) {
  EXPECT_EQ(transfer_path_name(TransferPath::kNetwork), "network");
  EXPECT_EQ(transfer_path_name(TransferPath::kHostToDevice), "host_to_device");
  EXPECT_EQ(transfer_path_name(TransferPath::kDeviceToHost), "device_to_host");
  EXPECT_EQ(transfer_path_name(TransferPath::kDeviceToDevice), "device_to_device");
  EXPECT_EQ(event_type_name(EventType::kBufferCreated), "buffer_created");
  EXPECT_EQ(event_type_name(EventType::kResidency), "residency");
  EXPECT_EQ(event_type_name(EventType::kBufferDestroyed), "buffer_destroyed");
  EXPECT_EQ(event_type_name(EventType::kTransfer), "transfer");
  EXPECT_EQ(event_type_name(EventType::kPhaseBegin), "phase_begin");
  EXPECT_EQ(event_type_name(EventType::kPhaseEnd), "phase_end");
  EXPECT_EQ(event_type_name(EventType::kMemorySample), "memory");
  EXPECT_EQ(event_type_name(EventType::kCheck), "check");
}

TEST(EventsTest, wall_time_is_seconds_since_the_unix_epoch) {
  const double now = wall_time_now();
  EXPECT_GT(now, 1.6e9);  // after 2020
  EXPECT_LT(now, 4.1e9);  // before 2100
}

TEST(EventsTest, recording_sink_keeps_events_in_order_until_cleared) {
  RecordingEventSink sink;
  for (int i = 0; i < 3; ++i) {
    Event event;
    event.type = EventType::kTransfer;
    event.bytes = i;
    sink.on_event(event);
  }
  const std::vector<Event> events = sink.events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].bytes, 2);
  sink.clear();
  EXPECT_TRUE(sink.events().empty());
}

TEST(EventsTest, recording_sink_takes_events_from_many_threads) {
  RecordingEventSink sink;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&sink, t] {
      for (int i = 0; i < 500; ++i) {
        Event event;
        event.rank = t;
        sink.on_event(event);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(sink.events().size(), 2000u);
}

TEST(EventsTest, fan_out_sends_each_event_to_every_sink) {
  RecordingEventSink a, b;
  FanOutEventSink fan_out;
  fan_out.add(&a);
  fan_out.add(&b);
  fan_out.on_event(Event{});
  EXPECT_EQ(a.events().size(), 1u);
  EXPECT_EQ(b.events().size(), 1u);
}

}  // namespace
}  // namespace hybridshard::core
