/**
 * Squeezed Attention (arXiv 2411.09688): the fixed context's keys clustered per layer and KV head
 * (`clusterKeys`, cosine k-means on the host; `squeezed.normalize` / `seed` / `lloyd` / `assign` and their
 * driver `gpuKMeans` on a GPU), the prefix index with its calibrated global threshold (a versioned,
 * checksummed artifact), the centroid lookup (`squeezed.lookup`) and key selection (`squeezed.select`) on
 * the KV cache, and the `squeezed` technique; the attention over the lists is the shared
 * `dense.indexCacheAttn`.
 * @module
 */
export * from "./params.ts";
export * from "./kmeans.ts";
export * from "./kmeans_gpu.ts";
export * from "./kmeans_gpu_driver.ts";
export * from "./lookup.ts";
export * from "./lookup_hier.ts";
export * from "./select.ts";
export * from "./attend.ts";
export * from "./index.ts";
export * from "./technique.ts";
export * from "./speed.ts";
