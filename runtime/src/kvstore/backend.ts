/**
 * @internal The contract between the generic store (`makeStore` in `store.ts`) and a backend.
 * @module
 */
import type { KvStoreError } from "./errors.ts";

/**
 * @internal What a backend does with envelopes; `makeStore` adds the key checks, the envelope, the
 * size limit, the closed state and the mapping of unknown errors.
 */
export interface BackendImpl {
  /** The raw envelope stored under `key`, or undefined. */
  readEntry(key: string): Promise<Uint8Array | undefined>;
  /** Store an envelope under `key` atomically. */
  writeEntry(key: string, entry: Uint8Array): Promise<void>;
  /** Remove `key`; whether it existed. */
  remove(key: string): Promise<boolean>;
  /** Whether `key` exists. */
  exists(key: string): Promise<boolean>;
  /** Release everything (never throws). */
  close(): Promise<void>;
  /** How messages name the entry of `key`. */
  where(key: string): string;
  /** An unknown failure of operation `op` on `key` as a typed error. */
  mapError(e: unknown, op: string, key: string): KvStoreError;
  /** Milliseconds an operation may take before `unreachable` (none: no limit). */
  readonly timeoutMs?: number;
}
