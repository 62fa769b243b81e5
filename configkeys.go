package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// This file is the table of configuration keys (configTable): what each key
// accepts, its range and its meaning. Everything else derives from it: the
// decoder says what a value of the wrong type should have been, validate
// checks every value against its range, -print-config and GET /proxy/config
// mask the secrets and URLs it marks, and the README's configuration table
// is generated from it (TestConfigTable ties it to Config's fields, and
// TestConfigTableInREADME to the README).

// configKind is what a configuration key holds.
type configKind int

const (
	cfgSeconds      configKind = iota // a number of seconds, fractions allowed
	cfgWholeSeconds                   // a whole number of seconds
	cfgCount                          // a whole number of unit
	cfgNumber                         // a number of unit, fractions allowed
	cfgBool
	cfgEnum      // one of values, in any case
	cfgText      // a string of min to max characters
	cfgURL       // an http(s) URL; its password is masked when printed
	cfgPath      // a file or directory
	cfgSecret    // a credential: unset, or at least minSecretLength characters
	cfgServerKey // an environment's server key (validate checks it with its pair)
	cfgList      // a list of min to max entries, each of kind of
	cfgIgnored   // any JSON, accepted for compatibility and not used
)

// minSecretLength is the shortest admin_token, webhook_secret,
// sse.authentication_token or peer_secret accepted: 16 characters of a
// generated token cannot be guessed over HTTP, and a one-character token
// could.
const minSecretLength = 16

// Timeouts and heartbeats run from 100 ms (below it no request, stream or
// upstream call can complete) to an hour (beyond it a stuck connection or a
// stalled stream holds its resources for longer than anyone waits for it).
// Every maximum keeps seconds() far from time.Duration's limit (292 years).
const (
	minTimeoutSeconds = 0.1
	maxTimeoutSeconds = 3600
	minPollSeconds    = 1     // below it the upstream is hammered
	maxPollSeconds    = 86400 // a day: a proxy must not serve older flags
)

// keySpec is one row of configTable.
type keySpec struct {
	// key names the key as a dotted path, "[]" standing for a list's
	// entries: environment_key_pairs[].client_side_key.
	key      string
	kind     configKind
	min, max float64    // of a number, a text's length or a list's length
	unit     string     // of a count: bytes, traits…
	of       configKind // of a list: its entries
	values   []string   // of an enum
	optional bool       // of a URL, path or text: empty means unset
	nullable bool       // null is valid (it disables the setting)
	shape    string     // of a list of objects: one entry, as an example
	def      string     // the README's default, when defaultConfig cannot say
	meaning  string     // the README's meaning, in Markdown
}

// configTable lists every configuration key in the order of Config's
// fields. A key is documented by its row's meaning; its range is the row's
// and nowhere else. Ranges other than the rules above say why.
var configTable = []keySpec{
	{key: "environment_key_pairs", kind: cfgList, of: cfgIgnored, min: 1, max: 1000, def: "required",
		shape:   `{"server_side_key": "ser.…", "client_side_key": "…"}`,
		meaning: "`[{\"server_side_key\": \"ser.…\", \"client_side_key\": \"…\"}]`"},
	{key: "environment_key_pairs[].server_side_key", kind: cfgServerKey, def: "required",
		meaning: "the environment's server-side key (`ser.…`), which the proxy polls with; SDKs may use it too"},
	// A rotation lists two or three keys; ten is plenty.
	{key: "environment_key_pairs[].server_side_keys", kind: cfgList, of: cfgServerKey, min: 0, max: 10, def: "none",
		meaning: "several server keys of one environment, for a [rotation](#reload-key-rotation-and-shutdown); after `server_side_key` when both are set"},
	// Flagsmith's client keys are about 22 characters; they appear in URL
	// paths, so they are bounded like a path segment.
	{key: "environment_key_pairs[].client_side_key", kind: cfgText, min: 1, max: 256, def: "required",
		meaning: "the environment's client-side key, which browsers and mobile SDKs send"},
	{key: "environment_key_pairs[].environment_document_path", kind: cfgPath, optional: true, def: "none",
		meaning: "serve this environment from a local file, reloaded when it changes"},
	{key: "api_url", kind: cfgURL,
		meaning: "Flagsmith API, SaaS or self-hosted, without a query or fragment (a password in it is masked where shown)"},
	{key: "api_poll_frequency_seconds", kind: cfgSeconds, min: minPollSeconds, max: maxPollSeconds,
		meaning: "seconds between polls"},
	{key: "api_poll_timeout_seconds", kind: cfgSeconds, min: minTimeoutSeconds, max: maxTimeoutSeconds,
		meaning: "timeout of one upstream request"},
	{key: "allow_origins", kind: cfgList, of: cfgText, min: 1, max: 1000,
		meaning: "CORS origins"},
	{key: "allow_credentials", kind: cfgBool,
		meaning: "send `Access-Control-Allow-Credentials: true` to listed origins"},
	{key: "endpoint_caches", kind: cfgIgnored, def: "none",
		meaning: "accepted for compatibility; answers are already precomputed"},
	{key: "server.host", kind: cfgText, min: 0, max: 253,
		meaning: "listen address (empty: every interface)"},
	{key: "server.port", kind: cfgCount, min: 0, max: 65535,
		meaning: "listen port (0: any free port)"},
	{key: "server.proxy_headers", kind: cfgBool,
		meaning: "trust `X-Forwarded-For` for the access log"},
	// Whole seconds, as in Flagsmith's proxy (uvicorn's setting).
	{key: "server.timeout_keep_alive", kind: cfgWholeSeconds, min: 1, max: maxTimeoutSeconds,
		meaning: "idle keep-alive seconds"},
	{key: "server.read_header_timeout_seconds", kind: cfgSeconds, min: minTimeoutSeconds, max: maxTimeoutSeconds,
		meaning: "slow-loris bound"},
	{key: "server.write_timeout_seconds", kind: cfgSeconds, min: minTimeoutSeconds, max: maxTimeoutSeconds,
		meaning: "bound on one response (streams lift it per write)"},
	// Below 1 KiB ordinary SDK requests do not fit; net/http's own default
	// is the ceiling.
	{key: "server.max_header_bytes", kind: cfgCount, unit: "bytes", min: 1 << 10, max: 1 << 20,
		meaning: "request header limit (JSON 431 beyond)"},
	{key: "server.shutdown_timeout_seconds", kind: cfgSeconds, min: minTimeoutSeconds, max: maxTimeoutSeconds,
		meaning: "then, the deadline for in-flight requests"},
	// 0 is meaningful: shut down without draining.
	{key: "server.drain_seconds", kind: cfgSeconds, min: 0, max: maxTimeoutSeconds,
		meaning: "on SIGTERM, seconds of serving with readiness 503 (0: none)"},
	{key: "server.tls.cert_file", kind: cfgPath, optional: true, def: "none",
		meaning: "serve HTTPS with this PEM chain and `server.tls.key_file` ([TLS](#tls-and-edge-deployment))"},
	{key: "server.tls.key_file", kind: cfgPath, optional: true, def: "none",
		meaning: "the chain's PEM private key"},
	{key: "logging.log_level", kind: cfgEnum, values: []string{"DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"},
		meaning: "least severe level logged"},
	{key: "logging.log_format", kind: cfgEnum, values: []string{"generic", "json"},
		meaning: "`generic` (text) or `json`"},
	{key: "logging.enable_access_log", kind: cfgBool,
		meaning: "one structured line per request"},
	{key: "logging.log_event_field_name", kind: cfgText, min: 1, max: 64,
		meaning: "name of the message field"},
	// 0 is meaningful (stale as soon as a poll is late); the grace is
	// multiplied by the number of environments, still far from overflow.
	{key: "health_check.environment_update_grace_period_seconds", kind: cfgSeconds, min: 0, max: maxTimeoutSeconds, nullable: true,
		meaning: "readiness fails once the oldest document is older than the poll frequency plus this × the environments; `null` disables the staleness check"},
	{key: "cache_dir", kind: cfgPath, optional: true, def: "none",
		meaning: "persist every good document here (atomically) and load them at start"},
	{key: "admin_token", kind: cfgSecret, def: "none",
		meaning: "enables `POST /proxy/refresh` and `GET /proxy/config`"},
	{key: "sse.enabled", kind: cfgBool,
		meaning: "realtime streams"},
	{key: "sse.heartbeat_seconds", kind: cfgSeconds, min: minTimeoutSeconds, max: maxTimeoutSeconds,
		meaning: "comment heartbeat interval"},
	// A stream holds about 26 KiB: 100,000 of them is 2.6 GiB, past what a
	// proxy beside its application should ever give to streams.
	{key: "sse.max_subscribers", kind: cfgCount, unit: "streams", min: 1, max: 100_000,
		meaning: "open streams allowed, about 30 KiB each (the default fits a 64 MiB pod); past it a stream gets 503 and is counted"},
	{key: "sse.authentication_token", kind: cfgSecret, def: "none",
		meaning: "enables `POST /sse/environments/{client_key}/queue-change`"},
	// From the smallest useful identities body to far past any SDK's.
	{key: "limits.max_body_bytes", kind: cfgCount, unit: "bytes", min: 1 << 10, max: 64 << 20,
		meaning: "request body limit (413 beyond)"},
	{key: "limits.max_traits", kind: cfgCount, unit: "traits", min: 1, max: 10_000,
		meaning: "traits per identity request"},
	{key: "limits.max_trait_key_length", kind: cfgCount, unit: "characters", min: 1, max: 1000,
		meaning: "characters per trait key"},
	{key: "analytics.enabled", kind: cfgBool,
		meaning: "accept flag analytics and forward them (false: those paths answer 404)"},
	{key: "analytics.flush_interval_seconds", kind: cfgSeconds, min: minTimeoutSeconds, max: maxTimeoutSeconds,
		meaning: "seconds between forwards of each environment's sums"},
	// A key (feature, identity, labels) holds up to a few KiB of names:
	// a million is the most one process should keep for one environment.
	{key: "analytics.max_pending_keys", kind: cfgCount, unit: "keys", min: 1, max: 1_000_000,
		meaning: "per environment, sums waiting to be forwarded; new keys past it are dropped and counted"},
	// Under 64 KiB one post of long names could not be held; no gateway
	// has a gigabyte to spare.
	{key: "analytics.max_pending_bytes", kind: cfgCount, unit: "bytes", min: minPendingBytes, max: maxPendingBytes,
		meaning: "per process, bytes held for the upstream, analytics sums and events together, waiting or on their way; new ones past it are dropped and counted"},
	{key: "analytics.max_pending_events", kind: cfgCount, unit: "events", min: 1, max: maxPendingEvents,
		meaning: "per environment, [events](#flag-analytics) waiting to be forwarded or on their way; new ones past it are dropped and counted"},
	{key: "analytics.events_api_url", kind: cfgURL,
		meaning: "where the events relay forwards `POST /v1/events` (`{events_api_url}v1/events`, as Flagsmith's SDKs post them), without a query or fragment"},
	// A poll period like api_poll_frequency_seconds: each full refresh is
	// a whole download.
	{key: "full_refresh_seconds", kind: cfgSeconds, min: minPollSeconds, max: maxPollSeconds,
		meaning: "this often a poll goes without `If-None-Match`/`If-Modified-Since`"},
	// A thousand pages is far beyond the largest document seen; the bound
	// stops an upstream whose pages never end.
	{key: "max_document_pages", kind: cfgCount, unit: "pages", min: 1, max: maxDocumentPagesLimit,
		meaning: "most pages one environment document may come in ([paginated documents](#paginated-documents)); more fails the poll and keeps the previous document"},
	{key: "realtime_api_url", kind: cfgURL, optional: true, def: "none",
		meaning: "follow `{realtime_api_url}/sse/environments/{client_key}/stream` (Flagsmith's realtime service or another proxy); events bring a poll"},
	{key: "webhook_secret", kind: cfgSecret, def: "none",
		meaning: "enables `POST /proxy/webhook`"},
	// One name, such as a headless Service's, stands for every replica
	// behind it, so a fleet needs few.
	{key: "peers", kind: cfgList, of: cfgURL, min: 0, max: maxPeers, def: "none",
		meaning: "base URLs of the fleet's replicas (`[\"http://edge-proxy-peers:8000\"]`), without credentials, query or fragment; a host resolving to several addresses means each; pushes are relayed to them ([fleet](#a-fleet-behind-a-load-balancer)); needs `peer_secret`"},
	{key: "peer_secret", kind: cfgSecret, def: "none",
		meaning: "the same on every replica; signs relays and enables `POST /proxy/peer-refresh`"},
	{key: "verify.sample_rate", kind: cfgNumber, min: 0, max: 1,
		meaning: "share of identity requests asked again of Flagsmith and compared (0: off; [shadow verification](#flagsmith-stays-the-source-of-truth))"},
	// Each check is an API call on the customer's Flagsmith quota: the
	// ceiling bounds that cost (100 a second is 8.6 million a day), the
	// floor still allows a check every couple of minutes.
	{key: "verify.max_per_second", kind: cfgNumber, unit: "checks a second", min: minVerifyMaxPerSecond, max: maxVerifyMaxPerSecond,
		meaning: "checks a second at most, for the whole process; each is an API call on your Flagsmith quota"},
	{key: "write_back.enabled", kind: cfgBool,
		meaning: "write the identities and traits SDKs send to Flagsmith ([trait write-back](#flagsmith-stays-the-source-of-truth))"},
	// Each write is an API call too; a write that waits past its queue is
	// dropped and counted, so the floor keeps the queue moving.
	{key: "write_back.max_per_second", kind: cfgNumber, unit: "writes a second", min: minWriteBackMaxPerSecond, max: maxWriteBackMaxPerSecond,
		meaning: "writes a second at most, for the whole process; each is an API call on your Flagsmith quota"},
}

// configSpecs indexes configTable by key.
var configSpecs = sync.OnceValue(func() map[string]*keySpec {
	m := make(map[string]*keySpec, len(configTable))
	for i := range configTable {
		m[configTable[i].key] = &configTable[i]
	}
	return m
})

// valid says what the key accepts, for errors and the README.
func (k *keySpec) valid() string {
	var s string
	switch k.kind {
	case cfgSeconds:
		s = fmt.Sprintf("%s to %s seconds", formatNumber(k.min), formatNumber(k.max))
	case cfgWholeSeconds:
		s = fmt.Sprintf("%s to %s whole seconds", formatNumber(k.min), formatNumber(k.max))
	case cfgCount, cfgNumber:
		s = strings.TrimSpace(fmt.Sprintf("%s to %s %s", formatNumber(k.min), formatNumber(k.max), k.unit))
	case cfgBool:
		s = "true or false"
	case cfgEnum:
		s = "one of " + strings.Join(k.values, ", ")
	case cfgText:
		s = fmt.Sprintf("a string of %s to %s characters", formatNumber(k.min), formatNumber(k.max))
	case cfgURL:
		s = "an http(s) URL"
	case cfgPath:
		s = "a path"
	case cfgSecret:
		s = fmt.Sprintf("a string of at least %d characters", minSecretLength)
	case cfgServerKey:
		s = fmt.Sprintf("a string starting with %q", serverKeyPrefix)
	case cfgList:
		s = fmt.Sprintf("a list of %s to %s entries", formatNumber(k.min), formatNumber(k.max))
		if k.of != cfgIgnored {
			e := k.entry()
			s += ", each " + e.valid()
		}
		if k.shape != "" {
			s += " like " + k.shape
		}
	case cfgIgnored:
		s = "any JSON value"
	}
	if k.nullable {
		s += ", or null"
	}
	if k.optional {
		s += ", or unset"
	}
	return s
}

// entry is the spec of a list's entries. A text entry (an origin) is
// bounded like a URL a browser sends.
func (k *keySpec) entry() keySpec {
	return keySpec{key: k.key + "[]", kind: k.of, min: 1, max: 2048}
}

// hidden reports whether a problem may not quote the key's value: a
// credential, or a list that may hold one (server keys, key pairs).
func (k *keySpec) hidden() bool {
	return k.kind == cfgSecret || k.kind == cfgServerKey || (k.kind == cfgList && k.of != cfgText)
}

// check reports a value of the key outside its range. key names this value
// (environment_key_pairs[2].client_side_key).
func (k *keySpec) check(key string, v reflect.Value) error {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			if k.nullable {
				return nil
			}
			return fmt.Errorf("%s: null is not valid; want %s", key, k.valid())
		}
		v = v.Elem()
	}
	outside := func(n float64) bool { return !(n >= k.min && n <= k.max) } // NaN too
	switch k.kind {
	case cfgSeconds, cfgNumber:
		if f := v.Float(); outside(f) {
			return fmt.Errorf("%s: %q is out of range; want %s", key, strconv.FormatFloat(f, 'g', -1, 64), k.valid())
		}
	case cfgWholeSeconds, cfgCount:
		if n := v.Int(); outside(float64(n)) {
			return fmt.Errorf("%s: %q is out of range; want %s", key, strconv.FormatInt(n, 10), k.valid())
		}
	case cfgEnum:
		if s := v.String(); !slices.ContainsFunc(k.values, func(e string) bool { return strings.EqualFold(e, s) }) {
			return fmt.Errorf("%s: %q is not valid; want %s", key, s, k.valid())
		}
	case cfgText:
		if s := v.String(); outside(float64(utf8.RuneCountInString(s))) && !(k.optional && s == "") {
			return fmt.Errorf("%s: %s has %d characters; want %s", key, quoteShort(s), utf8.RuneCountInString(s), k.valid())
		}
	case cfgURL:
		switch s := v.String(); {
		case s == "" && k.optional:
		case s == "":
			return fmt.Errorf("%s: must be set; want %s", key, k.valid())
		case !isHTTPURL(s):
			return fmt.Errorf("%s: %s is not valid; want %s", key, quoteShort(maskURL(s)), k.valid())
		}
	case cfgSecret:
		if n := utf8.RuneCountInString(v.String()); n > 0 && n < minSecretLength {
			return fmt.Errorf("%s: a secret of %d characters is too short (it is not shown); want %s", key, n, k.valid())
		}
	case cfgList:
		if n := v.Len(); outside(float64(n)) {
			return fmt.Errorf("%s: a list of %d entries is not valid; want %s", key, n, k.valid())
		}
		if k.of == cfgText {
			e := k.entry()
			for i := range v.Len() {
				if err := e.check(fmt.Sprintf("%s[%d]", key, i), v.Index(i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkRanges reports every value of c outside its key's range, in the
// order of Config's fields.
func checkRanges(c *Config) []error {
	var errs []error
	walkConfig(reflect.ValueOf(c).Elem(), "", "", func(key, spec string, v reflect.Value) {
		if k := configSpecs()[spec]; k != nil {
			if err := k.check(key, v); err != nil {
				errs = append(errs, err)
			}
		}
	})
	return errs
}

// sortProblems puts problems in the order of Config's fields (the order of
// configTable), whichever check found them, so that they read the same way
// every time. A problem begins with its key.
func sortProblems(errs []error) {
	order := func(err error) int {
		key, _, _ := strings.Cut(err.Error(), ": ")
		spec := strings.TrimSuffix(specKey(key), "[]") // an entry of a list: the list
		for i, k := range configTable {
			if k.key == spec || strings.HasPrefix(k.key, spec+".") || strings.HasPrefix(k.key, spec+"[]") {
				return i
			}
		}
		return len(configTable)
	}
	slices.SortStableFunc(errs, func(a, b error) int { return order(a) - order(b) })
}

// specKey turns a value's key into its configTable key: list indexes
// become "[]".
func specKey(key string) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(key, '[')
		if open < 0 {
			break
		}
		end := strings.IndexByte(key[open:], ']')
		if end < 0 {
			break
		}
		b.WriteString(key[:open] + "[]")
		key = key[open+end+1:]
	}
	b.WriteString(key)
	return b.String()
}

// walkConfig calls visit for each value below v (a Config, or a part of
// one) that a key names: every field, and every field of a list's entries,
// in the order of the fields. key names the value as problems do
// (environment_key_pairs[2].client_side_key), spec as configTable does
// (environment_key_pairs[].client_side_key). An object (server, logging…)
// is not visited itself, only its fields.
func walkConfig(v reflect.Value, key, spec string, visit func(key, spec string, v reflect.Value)) {
	switch t := v.Type(); {
	case t.Kind() == reflect.Struct:
		for i := range t.NumField() {
			tag := configTag(t.Field(i))
			childKey, childSpec := joinKey(key, tag), joinKey(spec, tag)
			if t.Field(i).Type.Kind() != reflect.Struct {
				visit(childKey, childSpec, v.Field(i))
			}
			walkConfig(v.Field(i), childKey, childSpec, visit)
		}
	case isObjectList(t):
		for i := range v.Len() {
			walkConfig(v.Index(i), fmt.Sprintf("%s[%d]", key, i), spec+"[]", visit)
		}
	}
}

// configSpecKeys lists the keys configTable must have a row for: every
// field of Config and of its objects and lists, as walkConfig visits them.
func configSpecKeys(t reflect.Type, spec string) []string {
	var keys []string
	switch {
	case t.Kind() == reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			child := joinKey(spec, configTag(f))
			if f.Type.Kind() != reflect.Struct {
				keys = append(keys, child)
			}
			keys = append(keys, configSpecKeys(f.Type, child)...)
		}
	case isObjectList(t):
		keys = append(keys, configSpecKeys(t.Elem(), spec+"[]")...)
	}
	return keys
}

func isObjectList(t reflect.Type) bool {
	return t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct
}

func joinKey(parent, child string) string {
	if parent == "" {
		return child
	}
	return parent + "." + child
}

// masked returns a copy of c with every secret and every URL's password
// masked, as configTable marks them: what -print-config and GET
// /proxy/config show.
func (c *Config) masked() (Config, error) {
	// A deep copy: the masks must not reach the running configuration.
	raw, err := json.Marshal(c)
	if err != nil {
		return Config{}, err
	}
	var out Config
	if err := json.Unmarshal(raw, &out); err != nil {
		return Config{}, err
	}
	walkConfig(reflect.ValueOf(&out).Elem(), "", "", func(_, spec string, v reflect.Value) {
		k := configSpecs()[spec]
		if k == nil {
			return
		}
		mask := func(kind configKind, v reflect.Value) {
			switch s := v.String(); {
			case s == "":
			case kind == cfgSecret || kind == cfgServerKey:
				v.SetString(secret(s).String())
			case kind == cfgURL:
				v.SetString(maskURL(s))
			}
		}
		if k.kind == cfgList && v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String {
			for i := range v.Len() {
				mask(k.of, v.Index(i))
			}
		} else if v.Kind() == reflect.String {
			mask(k.kind, v)
		}
	})
	return out, nil
}

// secretShownFrom is the length from which a secret's mask shows its last
// four characters, to tell keys apart; a shorter secret shows none of
// itself. A server key's "ser." is shown always: every server key starts
// so, and it tells the key's kind.
const secretShownFrom = 24

// secret is a credential. It prints masked, so it cannot reach a log, an
// error or the printed configuration in clear by accident.
type secret string

func (s secret) String() string {
	prefix := ""
	if strings.HasPrefix(string(s), serverKeyPrefix) {
		prefix = serverKeyPrefix
	}
	if len(s) < secretShownFrom {
		return prefix + "****"
	}
	return prefix + "****" + string(s[len(s)-4:])
}

func (s secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// maskURL hides the user information of a URL but its user name: the
// password of user:password@host becomes ****, and a lone user name, how
// tokens are often passed (https://TOKEN@host), becomes **** too. It reads
// the text rather than a parsed URL, so a URL that does not parse is masked
// as well: everything between the scheme and the last "@" is user
// information, which may hide a part of an odd path but never shows a
// password. It is the one way a URL is shown: printed configuration,
// /proxy/config, problems and logs.
func maskURL(s string) string {
	start := 0
	if i := strings.Index(s, "://"); i >= 0 {
		start = i + len("://")
	}
	at := strings.LastIndex(s[start:], "@")
	if at < 0 {
		return s
	}
	userinfo := s[start : start+at]
	masked := "****"
	if user, _, hasPassword := strings.Cut(userinfo, ":"); hasPassword {
		masked = user + ":****"
	}
	return s[:start] + masked + s[start+at:]
}

// maskURLError masks the URL in an HTTP client's error (maskURL), which is
// logged: net/http hides a password there itself, but not a lone user name.
func maskURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = maskURL(ue.URL)
	}
	return err
}

// quoteShort quotes a value for a problem, cut to a readable length.
func quoteShort(s string) string {
	const max = 80
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "…"
	}
	return strconv.Quote(s)
}

// formatNumber writes a range's bound as a person would: 0.1, 3600, 65536.
func formatNumber(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
