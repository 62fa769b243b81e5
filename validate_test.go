package main

import (
	"math"
	"strings"
	"testing"
)

// TestValidateVerifyWriteBack checks the ranges of the shadow verification
// and write-back settings, every problem reported at once.
func TestValidateVerifyWriteBack(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"the bounds", func(c *Config) {
			c.Verify = VerifyConfig{SampleRate: 1, MaxPerSecond: maxVerifyMaxPerSecond}
			c.WriteBack = WriteBackConfig{Enabled: true, MaxPerSecond: minWriteBackMaxPerSecond}
		}, nil},
		{"every problem", func(c *Config) {
			c.Verify = VerifyConfig{SampleRate: 1.5, MaxPerSecond: 0}
			c.WriteBack = WriteBackConfig{MaxPerSecond: 5000}
		}, []string{"verify.sample_rate: 1.5", "verify.max_per_second: 0", "write_back.max_per_second: 5000"}},
		{"negative and NaN", func(c *Config) {
			c.Verify = VerifyConfig{SampleRate: -0.1, MaxPerSecond: math.NaN()}
			c.WriteBack = WriteBackConfig{MaxPerSecond: math.Inf(1)}
		}, []string{"verify.sample_rate: -0.1", "verify.max_per_second: NaN", "write_back.max_per_second: +Inf"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.EnvironmentKeyPairs = []KeyPair{pairA}
			tt.edit(&cfg)
			err := cfg.validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("validate() = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate() = nil; want %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("validate() = %v; want it to name %q", err, want)
				}
			}
		})
	}
	if got := defaultConfig(); got.Verify.SampleRate != 0 || got.Verify.MaxPerSecond != 1 || got.WriteBack.Enabled || got.WriteBack.MaxPerSecond != 10 {
		t.Errorf("defaults verify %+v, write_back %+v; want off, 1 a second, off, 10 a second", got.Verify, got.WriteBack)
	}
}
