// Where the dashboard's state comes from. The window and the models see only this interface; tests inject their own
// source (a subclass that calls publish()).
#pragma once

#include <QObject>
#include <QString>

#include "job_snapshot.h"

namespace hybridshard::gui {

enum class ConnectionState {
  kConnecting,  // no answer yet
  kConnected,   // the last poll answered with a valid status
  kRefused,     // the endpoint could not be reached (refused, unknown host, HTTP error, timeout before any answer)
  kMalformed,   // it answered, but not with a status document
  kStale,       // it answered before, but nothing valid has come for longer than the stale limit
  kReplay,      // a recorded run, not a connection
};
QString connection_state_name(ConnectionState state);  // "connecting", "connected", "refused", ...

class DataSource : public QObject {
  Q_OBJECT

 public:
  explicit DataSource(QObject* parent = nullptr) : QObject(parent) {}

  const JobSnapshot& snapshot() const { return snapshot_; }
  ConnectionState connection_state() const { return state_; }
  QString connection_detail() const { return detail_; }  // the error, the URL, or the file
  virtual QString description() const = 0;               // "http://127.0.0.1:9464" or "run.jsonl"
  virtual void start() = 0;

 signals:
  void snapshot_changed();
  void connection_state_changed(hybridshard::gui::ConnectionState state, const QString& detail);

 protected:
  void publish(JobSnapshot snapshot);
  void set_connection_state(ConnectionState state, const QString& detail);

 private:
  JobSnapshot snapshot_;
  ConnectionState state_ = ConnectionState::kConnecting;
  QString detail_;
};

}  // namespace hybridshard::gui
