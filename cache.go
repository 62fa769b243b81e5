package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// This file is the warm-start cache (cache_dir): every good upstream
// document is written atomically, and read back at start so a restarted
// proxy serves its last good flags at once, even with the upstream down.

// cachePath is where an environment's last good document is kept.
func cachePath(dir, clientKey string) string {
	return filepath.Join(dir, "environment-"+filepath.Base(clientKey)+".json")
}

// writeCache persists a document atomically (writeFileAtomic).
func writeCache(dir, clientKey string, raw []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeFileAtomic(cachePath(dir, clientKey), raw)
}

// loadCache publishes every cached document before the first poll, so a
// restart serves the last good flags at once even with the upstream down.
func (s *server) loadCache() {
	for _, env := range s.environments() {
		s.loadCached(env)
	}
}

// loadCached publishes env's cached document, if it has one. A corrupt or
// foreign file is logged and ignored.
func (s *server) loadCached(env *environment) {
	dir := s.config().CacheDir
	if dir == "" || env.pair.DocumentPath != "" {
		return
	}
	path := cachePath(dir, env.pair.ClientSideKey)
	raw, err := readFileLimited(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var snap *snapshot
	if err == nil {
		snap, err = newSnapshot(raw)
	}
	if err == nil {
		// The poller asks the upstream for changes since then.
		var fi os.FileInfo
		if fi, err = os.Stat(path); err == nil {
			snap.cachedAt = fi.ModTime()
		}
	}
	if err == nil && snap.clientKey != env.pair.ClientSideKey {
		err = fmt.Errorf("cached document belongs to another environment (api_key %s)", maskedKey(snap.clientKey))
	}
	if err == nil {
		err = s.publishSnapshot(env, snap, "cache")
	}
	if err != nil {
		s.log.Warn("cached document ignored", "env", env.pair.ClientSideKey, "path", path, "error", err.Error())
		return
	}
	settleMemory(snap)
}
