// hybridshard-dashboard: --connect URL (a running job's status endpoint) or --replay FILE (a run record);
// --screenshot FILE.png renders offscreen, saves and exits. --help and --version need no display: they are answered
// with a QCoreApplication, before any GUI is created.
#include <QApplication>
#include <QElapsedTimer>
#include <QFont>
#include <QPixmap>
#include <QStyleFactory>
#include <QTextStream>
#include <QThread>
#include <memory>

#include "command_line.h"
#include "dashboard_window.h"
#include "live_source.h"
#include "memory_timeline_view.h"
#include "replay_source.h"

namespace {

using hybridshard::gui::CommandLineAction;
using hybridshard::gui::ConnectionState;
using hybridshard::gui::DashboardOptions;

constexpr const char* kVersion = HYBRIDSHARD_VERSION;

void name_application() {
  QCoreApplication::setApplicationName(QStringLiteral("hybridshard-dashboard"));
  QCoreApplication::setApplicationVersion(QString::fromLatin1(kVersion));
}

int fail(const QString& message) {
  QTextStream(stderr) << "hybridshard-dashboard: " << message << '\n';
  return 2;
}

// Neither a display nor a platform chosen: the xcb plugin would abort the process with a message about plugins.
bool no_display() {
#if defined(Q_OS_LINUX)
  return qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM") && qEnvironmentVariableIsEmpty("DISPLAY") &&
         qEnvironmentVariableIsEmpty("WAYLAND_DISPLAY");
#else
  return false;
#endif
}

// Screenshot: wait (live) for a first answer or a definite error, lay out, grab, save.
int save_screenshot(hybridshard::gui::DashboardWindow& window, hybridshard::gui::DataSource& source, bool live,
                    const DashboardOptions& options) {
  window.show();
  if (live) {
    QElapsedTimer waited;
    waited.start();
    while (waited.elapsed() < options.wait_seconds * 1000 &&
           source.connection_state() == ConnectionState::kConnecting) {
      QApplication::processEvents(QEventLoop::AllEvents, 50);
      QThread::msleep(10);
    }
  }
  for (int pass = 0; pass < 5; ++pass) QApplication::processEvents();
  const QPixmap pixmap = window.grab();
  if (pixmap.isNull() || !pixmap.save(options.screenshot, "PNG"))
    return fail(QStringLiteral("cannot write %1").arg(options.screenshot));
  QTextStream(stdout) << "wrote " << options.screenshot << " (" << pixmap.width() << "x" << pixmap.height() << ", "
                      << hybridshard::gui::connection_state_name(source.connection_state()) << ")\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (hybridshard::gui::asks_help_or_version(argc, argv)) {
    const QCoreApplication core(argc, argv);
    name_application();
    const auto parsed = hybridshard::gui::parse_command_line(QCoreApplication::arguments());
    if (parsed.action == CommandLineAction::kError) return fail(parsed.text);
    QTextStream(stdout) << parsed.text;
    return 0;
  }
  // A screenshot needs no display.
  const bool screenshot = hybridshard::gui::asks_screenshot(argc, argv);
  if (screenshot && qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  if (!screenshot && no_display()) {
    // Say what is wrong with the arguments first (Qt's own options are not taken out here: one is an error too).
    QStringList arguments;
    for (int index = 0; index < argc; ++index) arguments << QString::fromLocal8Bit(argv[index]);
    const auto parsed = hybridshard::gui::parse_command_line(arguments);
    if (parsed.action == CommandLineAction::kError) return fail(parsed.text);
    return fail(
        QStringLiteral("no display (DISPLAY and WAYLAND_DISPLAY are not set): run it where there is one, "
                       "or render to a file with --screenshot FILE.png"));
  }
  QApplication app(argc, argv);
  name_application();
  QApplication::setStyle(QStyleFactory::create(QStringLiteral("Fusion")));
  QFont font(QStringLiteral("DejaVu Sans"));
  font.setPointSizeF(9.5);
  QApplication::setFont(font);

  const auto parsed = hybridshard::gui::parse_command_line(QApplication::arguments());
  if (parsed.action != CommandLineAction::kRun) {
    if (parsed.action == CommandLineAction::kError) return fail(parsed.text);
    QTextStream(stdout) << parsed.text;
    return 0;
  }
  const DashboardOptions& options = parsed.options;

  std::unique_ptr<hybridshard::gui::DataSource> source;
  hybridshard::gui::ReplaySource* replay = nullptr;
  if (!options.replay.isEmpty()) {
    auto replay_source = std::make_unique<hybridshard::gui::ReplaySource>();
    QString error;
    if (!replay_source->load(options.replay, &error)) return fail(error);
    replay = replay_source.get();
    source = std::move(replay_source);
  } else {
    hybridshard::gui::LiveSourceOptions live;
    live.poll_interval_ms = options.interval_ms;
    live.job = options.job;
    source = std::make_unique<hybridshard::gui::LiveSource>(options.connect, live);
  }

  hybridshard::gui::DashboardWindow window(source.get());
  window.alert_model()->set_rules(options.rules);
  window.resize(options.width, options.height);
  if (!options.ranks.isEmpty()) window.select_ranks(options.ranks);
  if (options.last_seconds > 0) window.timeline()->show_last(options.last_seconds);
  window.timeline()->set_capacity_visible(options.capacity_line);
  window.timeline()->set_log_scale(options.log_scale);
  if (replay != nullptr) replay->seek(options.at >= 0 ? options.at : replay->duration());
  source->start();

  if (options.screenshot.isEmpty()) {
    window.show();
    return QApplication::exec();
  }
  return save_screenshot(window, *source, replay == nullptr, options);
}
