// hybridshard-dashboard: --connect URL (a running job's status endpoint) or --replay FILE (a run record);
// --screenshot FILE.png renders offscreen, saves and exits.
#include <QApplication>
#include <QCommandLineParser>
#include <QElapsedTimer>
#include <QFont>
#include <QImage>
#include <QPixmap>
#include <QStyleFactory>
#include <QTextStream>
#include <QThread>
#include <QTimer>
#include <cstdio>
#include <cstring>
#include <memory>

#include "alert_model.h"
#include "dashboard_window.h"
#include "live_source.h"
#include "replay_source.h"

namespace {

using hybridshard::gui::ConnectionState;

int fail(const QString& message) {
  QTextStream(stderr) << "hybridshard-dashboard: " << message << '\n';
  return 2;
}

bool wants_screenshot(int argc, char** argv) {
  for (int index = 1; index < argc; ++index) {
    if (std::strncmp(argv[index], "--screenshot", 12) == 0) return true;
  }
  return false;
}

QVector<int> parse_ranks(const QString& text, bool* ok) {
  QVector<int> ranks;
  *ok = true;
  for (const QString& part : text.split(',', Qt::SkipEmptyParts)) {
    const QStringList range = part.split('-');
    bool first_ok = false, last_ok = false;
    const int first = range.value(0).toInt(&first_ok);
    const int last = range.size() == 2 ? range.value(1).toInt(&last_ok) : first;
    if (!first_ok || (range.size() == 2 && !last_ok) || range.size() > 2 || last < first) {
      *ok = false;
      return {};
    }
    for (int rank = first; rank <= last; ++rank) ranks << rank;
  }
  return ranks;
}

}  // namespace

int main(int argc, char** argv) {
  // A screenshot needs no display.
  if (wants_screenshot(argc, argv) && qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) {
    qputenv("QT_QPA_PLATFORM", "offscreen");
  }
  QApplication app(argc, argv);
  QApplication::setApplicationName(QStringLiteral("hybridshard-dashboard"));
  QApplication::setStyle(QStyleFactory::create(QStringLiteral("Fusion")));
  QFont font(QStringLiteral("DejaVu Sans"));
  font.setPointSizeF(9.5);
  QApplication::setFont(font);

  QCommandLineParser parser;
  parser.setApplicationDescription(
      QStringLiteral("Buffer residency, memory and phases of a hybridshard job, live or replayed."));
  parser.addHelpOption();
  const QCommandLineOption connect_option(QStringLiteral("connect"),
                                          QStringLiteral("Poll the job's status endpoint (http://host:port)."),
                                          QStringLiteral("URL"));
  const QCommandLineOption job_option(
      QStringLiteral("job"),
      QStringLiteral("Live, against `hybridshard serve`: the job to show (its /jobs lists them; default: the newest)."),
      QStringLiteral("NAME"));
  const QCommandLineOption replay_option(QStringLiteral("replay"), QStringLiteral("Replay a run record (JSON lines)."),
                                         QStringLiteral("FILE"));
  const QCommandLineOption screenshot_option(QStringLiteral("screenshot"),
                                             QStringLiteral("Render offscreen, save the window as PNG, exit."),
                                             QStringLiteral("FILE.png"));
  const QCommandLineOption at_option(QStringLiteral("at"),
                                     QStringLiteral("Replay: show the state at SECONDS after the record's start "
                                                    "(default for --screenshot: the end)."),
                                     QStringLiteral("SECONDS"));
  const QCommandLineOption ranks_option(QStringLiteral("ranks"),
                                        QStringLiteral("Ranks of the memory timeline, e.g. 0 or 0,2 or 0-3."),
                                        QStringLiteral("LIST"));
  const QCommandLineOption size_option(QStringLiteral("size"), QStringLiteral("Window size (default 1600x1000)."),
                                       QStringLiteral("WxH"), QStringLiteral("1600x1000"));
  const QCommandLineOption wait_option(
      QStringLiteral("wait"), QStringLiteral("Live screenshot: seconds to wait for a first answer (default 10)."),
      QStringLiteral("SECONDS"), QStringLiteral("10"));
  const QCommandLineOption interval_option(QStringLiteral("interval"), QStringLiteral("Live: poll interval in ms."),
                                           QStringLiteral("MS"), QStringLiteral("1000"));
  const QCommandLineOption headroom_option(
      QStringLiteral("alert-headroom"),
      QStringLiteral("Alert when free device memory is below this fraction (configs/alerts.yml: 0.05)."),
      QStringLiteral("FRACTION"), QStringLiteral("0.05"));
  const QCommandLineOption enter_option(
      QStringLiteral("alert-enter-seconds"),
      QStringLiteral("Alert when an enter takes longer than this (configs/alerts.yml: 30)."), QStringLiteral("SECONDS"),
      QStringLiteral("30"));
  parser.addOptions({connect_option, job_option, replay_option, screenshot_option, at_option, ranks_option, size_option,
                     wait_option, interval_option, headroom_option, enter_option});
  parser.process(app);

  if (parser.isSet(job_option) && !parser.isSet(connect_option)) {
    return fail(QStringLiteral("--job picks a job of a `hybridshard serve` given with --connect"));
  }
  if (parser.isSet(connect_option) == parser.isSet(replay_option)) {
    return fail(QStringLiteral("give exactly one of --connect URL and --replay FILE (see --help)"));
  }
  const QStringList size = parser.value(size_option).split('x');
  const int width = size.value(0).toInt();
  const int height = size.value(1).toInt();
  if (size.size() != 2 || width < 320 || height < 240)
    return fail(QStringLiteral("--size: expected WxH, e.g. 1600x1000"));
  bool ok = false;
  hybridshard::gui::AlertRules rules;
  rules.min_headroom_fraction = parser.value(headroom_option).toDouble(&ok);
  if (!ok || rules.min_headroom_fraction < 0 || rules.min_headroom_fraction > 1) {
    return fail(QStringLiteral("--alert-headroom: expected a fraction in [0, 1]"));
  }
  rules.max_enter_seconds = parser.value(enter_option).toDouble(&ok);
  if (!ok || rules.max_enter_seconds <= 0) return fail(QStringLiteral("--alert-enter-seconds: expected seconds > 0"));

  std::unique_ptr<hybridshard::gui::DataSource> source;
  hybridshard::gui::ReplaySource* replay = nullptr;
  if (parser.isSet(replay_option)) {
    auto replay_source = std::make_unique<hybridshard::gui::ReplaySource>();
    QString error;
    if (!replay_source->load(parser.value(replay_option), &error)) return fail(error);
    replay = replay_source.get();
    source = std::move(replay_source);
  } else {
    const QUrl url = QUrl::fromUserInput(parser.value(connect_option));
    if (!url.isValid() || url.host().isEmpty())
      return fail(QStringLiteral("--connect: not a URL: ") + parser.value(connect_option));
    hybridshard::gui::LiveSourceOptions options;
    options.poll_interval_ms = parser.value(interval_option).toInt(&ok);
    if (!ok || options.poll_interval_ms < 50) return fail(QStringLiteral("--interval: expected milliseconds >= 50"));
    options.job = parser.value(job_option);
    source = std::make_unique<hybridshard::gui::LiveSource>(url, options);
  }

  hybridshard::gui::DashboardWindow window(source.get());
  window.alert_model()->set_rules(rules);
  window.resize(width, height);
  if (parser.isSet(ranks_option)) {
    const QVector<int> ranks = parse_ranks(parser.value(ranks_option), &ok);
    if (!ok || ranks.isEmpty()) return fail(QStringLiteral("--ranks: expected a list like 0,2 or 0-3"));
    window.select_ranks(ranks);
  }
  if (replay != nullptr) {
    double at = replay->duration();
    if (parser.isSet(at_option)) {
      at = parser.value(at_option).toDouble(&ok);
      if (!ok || at < 0) return fail(QStringLiteral("--at: expected seconds >= 0"));
    }
    replay->seek(at);
  }
  source->start();

  if (!parser.isSet(screenshot_option)) {
    window.show();
    return QApplication::exec();
  }

  // Screenshot: wait (live) for a first answer or a definite error, lay out, grab.
  window.show();
  if (replay == nullptr) {
    const double wait_seconds = parser.value(wait_option).toDouble();
    QElapsedTimer waited;
    waited.start();
    while (waited.elapsed() < wait_seconds * 1000) {
      const ConnectionState state = source->connection_state();
      if (state != ConnectionState::kConnecting) break;
      QApplication::processEvents(QEventLoop::AllEvents, 50);
      QThread::msleep(10);
    }
  }
  for (int pass = 0; pass < 5; ++pass) QApplication::processEvents();
  const QString path = parser.value(screenshot_option);
  const QPixmap pixmap = window.grab();
  if (pixmap.isNull() || !pixmap.save(path, "PNG")) return fail(QStringLiteral("cannot write %1").arg(path));
  QTextStream(stdout) << "wrote " << path << " (" << pixmap.width() << "x" << pixmap.height() << ", "
                      << hybridshard::gui::connection_state_name(source->connection_state()) << ")\n";
  return 0;
}
