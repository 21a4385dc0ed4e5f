/**
 * The package version, the one source of it in code: `--version`, manifests and reports read it
 * here. tests/version_test.ts checks that it equals deno.json's `version` (bump both together).
 *
 * @module
 */

/** The gradmm-ts version (semver), as published. */
export const VERSION = "0.1.0";
