package traptor

// Level is a log record's severity.
type Level uint8

const (
	Trace Level = iota
	Debug
	Info
	Warn
	Error
)

// Log sends a structured record to the host's log, attributed to the stage;
// kv are key, value pairs.
func Log(level Level, message string, kv ...string) { logRecord(level, message, kv) }

// Counter adds delta to the stage's counter name (plugin_counter{stage,name}
// in the host's metrics). Keep names few and fixed.
func Counter(name string, delta uint64) { addCounter(name, delta) }
