#include "command_line.h"

#include <QCommandLineParser>
#include <QCoreApplication>
#include <cmath>
#include <cstring>

#include "rank_list.h"

namespace hybridshard::gui {

namespace {

bool has_argument(int argc, char** argv, std::initializer_list<const char*> names) {
  for (int index = 1; index < argc; ++index) {
    if (std::strcmp(argv[index], "--") == 0) return false;
    for (const char* name : names) {
      const std::size_t length = std::strlen(name);
      // "--screenshot" and "--screenshot=FILE"
      if (std::strncmp(argv[index], name, length) == 0 && (argv[index][length] == '\0' || argv[index][length] == '='))
        return true;
    }
  }
  return false;
}

ParsedCommandLine error(const QString& message) { return {CommandLineAction::kError, {}, message}; }

}  // namespace

bool asks_help_or_version(int argc, char** argv) {
  return has_argument(argc, argv, {"--help", "-h", "--help-all", "-?", "--version", "-v"});
}

bool asks_screenshot(int argc, char** argv) { return has_argument(argc, argv, {"--screenshot"}); }

ParsedCommandLine parse_command_line(const QStringList& arguments) {
  QCommandLineParser parser;
  parser.setApplicationDescription(
      QStringLiteral("Buffer residency, memory and phases of a hybridshard job, live or replayed."));
  const QCommandLineOption help_option = parser.addHelpOption();
  const QCommandLineOption version_option = parser.addVersionOption();
  const QCommandLineOption connect_option(QStringLiteral("connect"),
                                          QStringLiteral("Poll the job's status endpoint (http://host:port)."),
                                          QStringLiteral("URL"));
  const QCommandLineOption job_option(
      QStringLiteral("job"),
      QStringLiteral("Live, against `hybridshard serve`: the job to show (its /jobs lists them; default: the newest)."),
      QStringLiteral("NAME"));
  const QCommandLineOption replay_option(QStringLiteral("replay"), QStringLiteral("Replay a run record (JSON lines)."),
                                         QStringLiteral("FILE"));
  const QCommandLineOption screenshot_option(
      QStringLiteral("screenshot"),
      QStringLiteral("Render offscreen (no display needed), save the window as PNG, exit."),
      QStringLiteral("FILE.png"));
  const QCommandLineOption at_option(QStringLiteral("at"),
                                     QStringLiteral("Replay: show the state at SECONDS after the record's start "
                                                    "(default for --screenshot: the end)."),
                                     QStringLiteral("SECONDS"));
  const QCommandLineOption ranks_option(QStringLiteral("ranks"),
                                        QStringLiteral("Ranks of the memory timeline, e.g. 0 or 0,2 or 0-3."),
                                        QStringLiteral("LIST"));
  const QCommandLineOption last_option(QStringLiteral("last"),
                                       QStringLiteral("Timeline: show the last MINUTES (default: the whole job)."),
                                       QStringLiteral("MINUTES"));
  const QCommandLineOption no_capacity_option(
      QStringLiteral("no-capacity"),
      QStringLiteral("Timeline: leave out the capacity line; the y axis fits the memory in use."));
  const QCommandLineOption log_option(QStringLiteral("log"), QStringLiteral("Timeline: a logarithmic y axis."));
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
  parser.addOptions({connect_option, job_option, replay_option, screenshot_option, at_option, ranks_option, last_option,
                     no_capacity_option, log_option, size_option, wait_option, interval_option, headroom_option,
                     enter_option});

  if (!parser.parse(arguments)) {
    QString text = parser.errorText();
    if (text.endsWith(QLatin1Char('.'))) text.chop(1);
    return error(text + QStringLiteral(" (see --help)"));
  }
  if (parser.isSet(help_option) || parser.isSet(QStringLiteral("help-all")))
    return {CommandLineAction::kHelp, {}, parser.helpText()};
  if (parser.isSet(version_option)) {
    return {CommandLineAction::kVersion,
            {},
            QStringLiteral("%1 %2\n").arg(QCoreApplication::applicationName(), QCoreApplication::applicationVersion())};
  }
  if (!parser.positionalArguments().isEmpty())
    return error(QStringLiteral("unexpected argument '%1' (see --help)").arg(parser.positionalArguments().front()));

  DashboardOptions options;
  if (parser.isSet(job_option) && !parser.isSet(connect_option))
    return error(QStringLiteral("--job picks a job of a `hybridshard serve` given with --connect"));
  if (parser.isSet(connect_option) == parser.isSet(replay_option))
    return error(QStringLiteral("give exactly one of --connect URL and --replay FILE (see --help)"));
  if (parser.isSet(connect_option)) {
    options.connect = QUrl::fromUserInput(parser.value(connect_option));
    if (!options.connect.isValid() || options.connect.host().isEmpty())
      return error(QStringLiteral("--connect: not a URL: ") + parser.value(connect_option));
  }
  options.job = parser.value(job_option);
  options.replay = parser.value(replay_option);
  options.screenshot = parser.value(screenshot_option);
  if (parser.isSet(screenshot_option) && options.screenshot.isEmpty())
    return error(QStringLiteral("--screenshot: expected a file name"));

  const QStringList size = parser.value(size_option).split('x');
  options.width = size.value(0).toInt();
  options.height = size.value(1).toInt();
  if (size.size() != 2 || options.width < 320 || options.height < 240 || options.width > 16384 ||
      options.height > 16384)
    return error(QStringLiteral("--size: expected WxH between 320x240 and 16384x16384, e.g. 1600x1000"));
  bool ok = false;
  options.rules.min_headroom_fraction = parser.value(headroom_option).toDouble(&ok);
  if (!ok || !(options.rules.min_headroom_fraction >= 0 && options.rules.min_headroom_fraction <= 1))
    return error(QStringLiteral("--alert-headroom: expected a fraction in [0, 1]"));
  options.rules.max_enter_seconds = parser.value(enter_option).toDouble(&ok);
  if (!ok || !(options.rules.max_enter_seconds > 0) || std::isinf(options.rules.max_enter_seconds))
    return error(QStringLiteral("--alert-enter-seconds: expected seconds > 0"));
  options.interval_ms = parser.value(interval_option).toInt(&ok);
  if (!ok || options.interval_ms < 50) return error(QStringLiteral("--interval: expected milliseconds >= 50"));
  options.wait_seconds = parser.value(wait_option).toDouble(&ok);
  if (!ok || !(options.wait_seconds >= 0 && options.wait_seconds <= 3600))
    return error(QStringLiteral("--wait: expected seconds in [0, 3600]"));
  if (parser.isSet(at_option)) {
    options.at = parser.value(at_option).toDouble(&ok);
    if (!ok || !(options.at >= 0) || std::isinf(options.at))
      return error(QStringLiteral("--at: expected seconds >= 0"));
  }
  if (parser.isSet(ranks_option) && !parse_rank_list(parser.value(ranks_option), &options.ranks))
    return error(QStringLiteral("--ranks: expected a list like 0,2 or 0-3"));
  if (parser.isSet(last_option)) {
    const double minutes = parser.value(last_option).toDouble(&ok);
    if (!ok || !(minutes > 0) || std::isinf(minutes)) return error(QStringLiteral("--last: expected minutes > 0"));
    options.last_seconds = minutes * 60;
  }
  options.capacity_line = !parser.isSet(no_capacity_option);
  options.log_scale = parser.isSet(log_option);
  return {CommandLineAction::kRun, options, {}};
}

}  // namespace hybridshard::gui
