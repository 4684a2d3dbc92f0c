// Replayed data: a run record, a position in it (seconds since the record's first event), play / pause and speed.
// Seeking reconstructs the whole state at that moment (RecordPlayer).
#pragma once

#include <QElapsedTimer>
#include <QTimer>

#include "data_source.h"
#include "run_record.h"

namespace hybridshard::gui {

class ReplaySource : public DataSource {
  Q_OBJECT

 public:
  explicit ReplaySource(QObject* parent = nullptr);

  // Loads the record and shows its first moment; false with `error` naming file and line.
  bool load(const QString& path, QString* error);
  bool load_from_data(const QByteArray& data, const QString& name, QString* error);

  QString description() const override { return name_; }
  void start() override {}

  double duration() const { return record_.end_time() - record_.begin_time(); }
  double position() const { return position_; }
  double begin_time() const { return record_.begin_time(); }
  bool playing() const { return timer_.isActive(); }
  double speed() const { return speed_; }

 public slots:
  void seek(double seconds);  // clamped to [0, duration]
  void play();
  void pause();
  void set_speed(double speed);

 signals:
  void position_changed(double seconds);
  void playing_changed(bool playing);

 private:
  void tick();

  RunRecord record_;
  RecordPlayer player_{&record_};
  QString name_;
  double position_ = 0;
  double speed_ = 1;
  QTimer timer_;
  QElapsedTimer wall_;
};

}  // namespace hybridshard::gui
