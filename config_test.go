package main

import (
	"slices"
	"testing"
)

// TestConfigKeys checks the one list of configuration keys, Config's json
// tags: each field has its own key, and each alias stands for a key.
func TestConfigKeys(t *testing.T) {
	keys := configKeys()
	for i, k := range keys {
		if k == "" || k == "-" {
			t.Errorf("Config field %d has no json key", i)
		}
		if slices.Index(keys, k) != i {
			t.Errorf("config key %q names two fields", k)
		}
	}
	for alias, key := range configAliases {
		if !slices.Contains(keys, key) {
			t.Errorf("alias %q stands for %q, which is not a config key", alias, key)
		}
		if slices.Contains(keys, alias) {
			t.Errorf("alias %q is also a config key", alias)
		}
	}
}
