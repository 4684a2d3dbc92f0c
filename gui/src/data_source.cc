#include "data_source.h"

namespace hybridshard::gui {

QString connection_state_name(ConnectionState state) {
  switch (state) {
    case ConnectionState::kConnecting:
      return QStringLiteral("connecting");
    case ConnectionState::kConnected:
      return QStringLiteral("connected");
    case ConnectionState::kRefused:
      return QStringLiteral("refused");
    case ConnectionState::kMalformed:
      return QStringLiteral("malformed response");
    case ConnectionState::kStale:
      return QStringLiteral("stale");
    case ConnectionState::kReplay:
      break;
  }
  return QStringLiteral("replay");
}

void DataSource::publish(JobSnapshot snapshot) {
  snapshot_ = std::move(snapshot);
  emit snapshot_changed();
}

void DataSource::set_connection_state(ConnectionState state, const QString& detail) {
  if (state == state_ && detail == detail_) return;
  state_ = state;
  detail_ = detail;
  emit connection_state_changed(state, detail);
}

}  // namespace hybridshard::gui
