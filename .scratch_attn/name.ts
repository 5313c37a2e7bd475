import { loadSgemm, setBlasThreads } from "../runtime/src/model/blas.ts";
const s = await loadSgemm(); console.log(s.name, setBlasThreads(1), setBlasThreads(2));
