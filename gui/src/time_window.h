// What the timeline shows of a job's time axis (seconds since the job started): the whole job or the last N seconds,
// following new data, or a span the operator zoomed or panned to, which stays put until reset.
#pragma once

namespace hybridshard::gui {

struct TimeSpan {
  double begin = 0;
  double end = 1;
  double length() const { return end - begin; }
};

class TimeWindow {
 public:
  static constexpr double kMinimumSeconds = 0.01;  // the deepest zoom: 10 ms across the plot

  void show_whole_job();           // follows: [0, end of the data]
  void show_last(double seconds);  // follows: [end - seconds, end]
  // Zooms by `factor` (< 1 in, > 1 out) keeping `anchor` (seconds) at the same place on screen; stops following.
  void zoom(double factor, double anchor, double job_end);
  // Moves by `seconds` (> 0 later); stops following. Never beyond [0, job_end].
  void pan(double seconds, double job_end);
  // Back to following: the whole job or the last N seconds, whichever was chosen last.
  void reset() { manual_ = false; }

  bool following() const { return !manual_; }
  bool whole_job() const { return last_seconds_ <= 0; }
  double last_seconds() const { return last_seconds_; }  // 0: the whole job
  // The visible span when the data reaches `job_end` (>= 0); at least kMinimumSeconds long, never before 0.
  TimeSpan span(double job_end) const;

 private:
  double last_seconds_ = 0;
  bool manual_ = false;
  TimeSpan manual_span_;
};

}  // namespace hybridshard::gui
