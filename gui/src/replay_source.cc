#include "replay_source.h"

#include <QFileInfo>
#include <algorithm>

namespace hybridshard::gui {

ReplaySource::ReplaySource(QObject* parent) : DataSource(parent) {
  timer_.setInterval(50);
  connect(&timer_, &QTimer::timeout, this, &ReplaySource::tick);
}

bool ReplaySource::load(const QString& path, QString* error) {
  RunRecord record;
  if (!record.load(path, error)) return false;
  record_ = std::move(record);
  name_ = QFileInfo(path).fileName();
  player_ = RecordPlayer(&record_);
  set_connection_state(ConnectionState::kReplay, path);
  position_ = -1;
  seek(0);
  return true;
}

bool ReplaySource::load_from_data(const QByteArray& data, const QString& name, QString* error) {
  RunRecord record;
  if (!record.load_from_data(data, name, error)) return false;
  record_ = std::move(record);
  name_ = name;
  player_ = RecordPlayer(&record_);
  set_connection_state(ConnectionState::kReplay, name);
  position_ = -1;
  seek(0);
  return true;
}

void ReplaySource::seek(double seconds) {
  const double clamped = std::clamp(seconds, 0.0, std::max(duration(), 0.0));
  if (clamped == position_) return;
  position_ = clamped;
  publish(player_.seek(record_.begin_time() + clamped));
  emit position_changed(clamped);
}

void ReplaySource::play() {
  if (timer_.isActive()) return;
  if (position_ >= duration()) seek(0);
  wall_.start();
  timer_.start();
  emit playing_changed(true);
}

void ReplaySource::pause() {
  if (!timer_.isActive()) return;
  timer_.stop();
  emit playing_changed(false);
}

void ReplaySource::set_speed(double speed) { speed_ = std::max(speed, 0.01); }

void ReplaySource::tick() {
  const double elapsed = wall_.restart() / 1000.0;
  seek(position_ + elapsed * speed_);
  if (position_ >= duration()) pause();
}

}  // namespace hybridshard::gui
