/**
 * DistAttention's sharded KV cache (Infinite-LLM, arXiv 2401.02669): shards on backends of this process
 * (`openHostShard`, `openBackendShard`) or in worker processes over Redis (`openRemoteShard`, `serveShard`,
 * `spawnShardWorker`; `openBridgedKv` for the synchronous CPU forward), the cache that splits appends and merges partial attentions (`shardedKv`,
 * `syncShardedKv`), and the CPU forward's attention over it (`shardedAttention`).
 * @module
 */
export * from "./shard.ts";
export * from "./sharded.ts";
export { type BridgedKv, openBridgedKv } from "./bridge.ts";
export {
  openRemoteShard,
  serveShard,
  type ShardAddress,
  type ShardWorker,
  spawnShardWorker,
  TransportError,
  TransportErrorBase,
} from "./transport.ts";
