/**
 * Model registry: the published hyperparameters of the models the planner knows, each with its source.
 *
 * Every number below is copied from the model's `config.json` on its Hugging Face hub page (`source`).
 * `checkedAgainst` names the copy of that config that was actually read when this table was written
 * (the hub page itself, or a checkpoint derived from it whose `_name_or_path` names the original and
 * whose architecture fields are unchanged). SmolLM2-135M was also checked against the GGUF metadata of
 * `SmolLM2-135M-Instruct.Q4_1.gguf` (llama.block_count 30, head_count 9, head_count_kv 3,
 * context_length 8192, rope.freq_base 100000, embedding_length 576, vocab_size 49152).
 * @module
 */
import { Effect } from "effect";
import { PlanError } from "./errors.ts";

/** Published hyperparameters of a decoder-only transformer (Llama-style attention). */
export interface ModelSpec {
  /** Registry name used by the CLI and `plan()`, lower case (e.g. `llama-3.1-8b`). */
  readonly id: string;
  /** Other accepted names (instruct variants share the base model's shapes). */
  readonly aliases: readonly string[];
  /** Hugging Face repository id. */
  readonly repo: string;
  /** `config.json` on the hub page: where the numbers come from. */
  readonly source: string;
  /** The copy of that config read when this entry was written (see the module doc). */
  readonly checkedAgainst: string;
  /** `num_hidden_layers`. */
  readonly layers: number;
  /** `num_attention_heads` (query heads). */
  readonly heads: number;
  /** `num_key_value_heads` (GQA: query head h reads KV head floor(h / (heads / kvHeads))). */
  readonly kvHeads: number;
  /** `head_dim` (or `hidden_size / num_attention_heads` where the config omits it). */
  readonly headDim: number;
  /** `hidden_size`. */
  readonly hidden: number;
  /** `intermediate_size` (MLP width). */
  readonly intermediate: number;
  /** `rope_theta` (RoPE base). */
  readonly ropeTheta: number;
  /** RoPE scaling as the config states it, or `null`. */
  readonly ropeScaling: string | null;
  /** `max_position_embeddings`: the longest context in tokens. */
  readonly maxContext: number;
  /** `vocab_size`. */
  readonly vocab: number;
  /** `tie_word_embeddings`. */
  readonly tiedEmbeddings: boolean;
  /** Whether the Q/K/V projections carry biases (Qwen2 does). */
  readonly attentionBias: boolean;
}

const hf = (repo: string): string => `https://huggingface.co/${repo}/blob/main/config.json`;

/** The registry, in a fixed order (smallest first within a family). */
export const MODELS: readonly ModelSpec[] = [
  {
    id: "smollm2-135m",
    aliases: ["smollm2-135m-instruct", "huggingfacetb/smollm2-135m", "huggingfacetb/smollm2-135m-instruct"],
    repo: "HuggingFaceTB/SmolLM2-135M",
    source: hf("HuggingFaceTB/SmolLM2-135M"),
    checkedAgainst: "https://huggingface.co/rajrin/SmolLM2-FT-MyDataset/blame/main/config.json " +
      "(_name_or_path HuggingFaceTB/SmolLM2-135M) and the Q4_1 GGUF metadata",
    layers: 30,
    heads: 9,
    kvHeads: 3,
    headDim: 64,
    hidden: 576,
    intermediate: 1536,
    ropeTheta: 100000,
    ropeScaling: null,
    maxContext: 8192,
    vocab: 49152,
    tiedEmbeddings: true,
    attentionBias: false,
  },
  {
    id: "smollm2-360m",
    aliases: ["smollm2-360m-instruct", "huggingfacetb/smollm2-360m", "huggingfacetb/smollm2-360m-instruct"],
    repo: "HuggingFaceTB/SmolLM2-360M",
    source: hf("HuggingFaceTB/SmolLM2-360M"),
    checkedAgainst: "https://huggingface.co/assskelad/smollm2-360M-sft_SmallThoughts/blob/main/config.json " +
      "(_name_or_path HuggingFaceTB/SmolLM2-360M)",
    layers: 32,
    heads: 15,
    kvHeads: 5,
    headDim: 64,
    hidden: 960,
    intermediate: 2560,
    ropeTheta: 100000,
    ropeScaling: null,
    maxContext: 8192,
    vocab: 49152,
    tiedEmbeddings: true,
    attentionBias: false,
  },
  {
    id: "smollm2-1.7b",
    aliases: ["smollm2-1.7b-instruct", "huggingfacetb/smollm2-1.7b", "huggingfacetb/smollm2-1.7b-instruct"],
    repo: "HuggingFaceTB/SmolLM2-1.7B",
    source: hf("HuggingFaceTB/SmolLM2-1.7B"),
    checkedAgainst: "https://huggingface.co/mrfakename/failed-reasoning-1/blob/main/config.json " +
      "(_name_or_path HuggingFaceTB/SmolLM2-1.7B)",
    layers: 24,
    heads: 32,
    kvHeads: 32,
    headDim: 64,
    hidden: 2048,
    intermediate: 8192,
    ropeTheta: 130000,
    ropeScaling: null,
    maxContext: 8192,
    vocab: 49152,
    tiedEmbeddings: true,
    attentionBias: false,
  },
  {
    id: "llama-3.2-1b",
    aliases: ["llama-3.2-1b-instruct", "meta-llama/llama-3.2-1b", "meta-llama/llama-3.2-1b-instruct"],
    repo: "meta-llama/Llama-3.2-1B",
    source: hf("meta-llama/Llama-3.2-1B"),
    checkedAgainst:
      "https://huggingface.co/ariG23498/layer-skip-v0/blame/ab64ee42adea0da8e188087514b90d79aceccfb7/config.json " +
      "(_name_or_path meta-llama/Llama-3.2-1B)",
    layers: 16,
    heads: 32,
    kvHeads: 8,
    headDim: 64,
    hidden: 2048,
    intermediate: 8192,
    ropeTheta: 500000,
    ropeScaling:
      "llama3: factor 32, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 8192",
    maxContext: 131072,
    vocab: 128256,
    tiedEmbeddings: true,
    attentionBias: false,
  },
  {
    id: "llama-3.2-3b",
    aliases: ["llama-3.2-3b-instruct", "meta-llama/llama-3.2-3b", "meta-llama/llama-3.2-3b-instruct"],
    repo: "meta-llama/Llama-3.2-3B",
    source: hf("meta-llama/Llama-3.2-3B"),
    checkedAgainst: "https://huggingface.co/mlx-community/Llama-3.2-3B-bf16/blob/refs%2Fpr%2F1/config.json",
    layers: 28,
    heads: 24,
    kvHeads: 8,
    headDim: 128,
    hidden: 3072,
    intermediate: 8192,
    ropeTheta: 500000,
    ropeScaling:
      "llama3: factor 32, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 8192",
    maxContext: 131072,
    vocab: 128256,
    tiedEmbeddings: true,
    attentionBias: false,
  },
  {
    id: "llama-3.1-8b",
    aliases: [
      "llama-3.1-8b-instruct",
      "meta-llama/llama-3.1-8b",
      "meta-llama/llama-3.1-8b-instruct",
      "llama3.1-8b",
    ],
    repo: "meta-llama/Llama-3.1-8B",
    source: hf("meta-llama/Llama-3.1-8B"),
    checkedAgainst: "https://huggingface.co/NbAiLab/nb-llama-3.1-8B/blob/main/config.json " +
      "(_name_or_path meta-llama/Llama-3.1-8B)",
    layers: 32,
    heads: 32,
    kvHeads: 8,
    headDim: 128,
    hidden: 4096,
    intermediate: 14336,
    ropeTheta: 500000,
    ropeScaling:
      "llama3: factor 8, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 8192",
    maxContext: 131072,
    vocab: 128256,
    tiedEmbeddings: false,
    attentionBias: false,
  },
  {
    id: "llama-3.1-70b",
    aliases: ["llama-3.1-70b-instruct", "meta-llama/llama-3.1-70b", "meta-llama/llama-3.1-70b-instruct"],
    repo: "meta-llama/Llama-3.1-70B",
    source: hf("meta-llama/Llama-3.1-70B"),
    checkedAgainst: "https://huggingface.co/NarrativAI/Cakrawala-70B/blob/main/config.json " +
      "(_name_or_path meta-llama/Llama-3.1-70B-Instruct)",
    layers: 80,
    heads: 64,
    kvHeads: 8,
    headDim: 128,
    hidden: 8192,
    intermediate: 28672,
    ropeTheta: 500000,
    ropeScaling:
      "llama3: factor 8, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 8192",
    maxContext: 131072,
    vocab: 128256,
    tiedEmbeddings: false,
    attentionBias: false,
  },
  {
    id: "qwen2.5-7b",
    aliases: ["qwen/qwen2.5-7b", "qwen-2.5-7b"],
    repo: "Qwen/Qwen2.5-7B",
    source: hf("Qwen/Qwen2.5-7B"),
    checkedAgainst:
      "https://huggingface.co/AmberYifan/Qwen2.5-7B-gen-dpo-10k/blob/06301e9ceb9578f3c5ce6a4244af885d85f275ad/config.json " +
      "(_name_or_path Qwen/Qwen2.5-7B; head_dim = 3584 / 28)",
    layers: 28,
    heads: 28,
    kvHeads: 4,
    headDim: 128,
    hidden: 3584,
    intermediate: 18944,
    ropeTheta: 1000000,
    ropeScaling: null,
    maxContext: 131072,
    vocab: 152064,
    tiedEmbeddings: false,
    attentionBias: true,
  },
  {
    id: "mistral-7b-v0.3",
    aliases: ["mistral-7b", "mistral-7b-instruct-v0.3", "mistralai/mistral-7b-v0.3"],
    repo: "mistralai/Mistral-7B-v0.3",
    source: hf("mistralai/Mistral-7B-v0.3"),
    checkedAgainst: "https://huggingface.co/AmberYifan/Mistral-7B-v0.3-spin-10k/blob/main/config.json " +
      "(_name_or_path mistralai/Mistral-7B-v0.3)",
    layers: 32,
    heads: 32,
    kvHeads: 8,
    headDim: 128,
    hidden: 4096,
    intermediate: 14336,
    ropeTheta: 1000000,
    ropeScaling: null,
    maxContext: 32768,
    vocab: 32768,
    tiedEmbeddings: false,
    attentionBias: false,
  },
];

/** Registry names, in registry order. */
export const modelNames = (): readonly string[] => MODELS.map((m) => m.id);

/** Levenshtein edit distance (insert, delete, substitute each cost 1). */
export const editDistance = (a: string, b: string): number => {
  const prev = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j];
      prev[j] = Math.min(up + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length];
};

/** The registry name closest to `name` by edit distance over ids and aliases. */
export const nearestModel = (name: string): string => {
  const key = name.trim().toLowerCase();
  let best = MODELS[0].id;
  let bestD = Infinity;
  for (const m of MODELS) {
    for (const n of [m.id, ...m.aliases]) {
      const d = editDistance(key, n);
      if (d < bestD) [best, bestD] = [m.id, d];
    }
  }
  return best;
};

/**
 * Look a model up by id or alias (case-insensitive).
 * Fails with `PlanError` `unknown-model`, whose hint names the nearest match and lists the known names.
 */
export const getModel = (name: string): Effect.Effect<ModelSpec, PlanError> => {
  const key = name.trim().toLowerCase();
  const found = MODELS.find((m) => m.id === key || m.aliases.includes(key));
  return found ? Effect.succeed(found) : Effect.fail(
    new PlanError({
      reason: "unknown-model",
      message: `unknown model "${name}"`,
      hint: `did you mean "${nearestModel(name)}"? Known models: ${modelNames().join(", ")}`,
    }),
  );
};

/**
 * Parameter count of a Llama-style model from its hyperparameters (embeddings, attention and MLP
 * projections, RMSNorm weights, the LM head unless tied, Q/K/V biases where present).
 */
export const parameterCount = (m: ModelSpec): number => {
  const qDim = m.heads * m.headDim;
  const kvDim = m.kvHeads * m.headDim;
  const attn = m.hidden * qDim + 2 * m.hidden * kvDim + qDim * m.hidden +
    (m.attentionBias ? qDim + 2 * kvDim : 0);
  const mlp = 3 * m.hidden * m.intermediate;
  const perLayer = attn + mlp + 2 * m.hidden;
  const embed = m.vocab * m.hidden;
  return embed + m.layers * perLayer + m.hidden + (m.tiedEmbeddings ? 0 : embed);
};

/** Bytes of the KV cache for `tokens` tokens: K and V, every layer, `bytesPerElement` each (f32: 4). */
export const kvCacheBytes = (m: ModelSpec, tokens: number, bytesPerElement = 4): number =>
  2 * m.layers * m.kvHeads * m.headDim * tokens * bytesPerElement;
