import { Effect } from "effect";
import { assert, test } from "../../tests/harness.ts";
import { builtinDensities, builtinProfile, builtinProfileFor, builtinProfileNames } from "./builtin.ts";
import { fitKey } from "./profile.ts";

test("built-in profiles decode, carry provenance and fit every sampled operator", () => {
  for (const name of builtinProfileNames()) {
    const p = Effect.runSync(builtinProfile(name));
    assert.equal(p.profile.name, name);
    assert.ok(p.profile.command.startsWith("calibrate "), `${name}: ${p.profile.command}`);
    assert.ok(p.profile.commit.length > 0 && p.profile.date.length > 0);
    for (const k of p.profile.kernels) {
      assert.ok(k.samples.length > 0, `${name}/${k.operator}: measured samples`);
      assert.ok(p.fits.has(fitKey(k.operator, k.phase)));
    }
    const again = Effect.runSync(
      builtinProfileFor({ backend: p.profile.device.backend, name: p.profile.device.adapter }),
    );
    assert.equal(again.profile.name, name);
  }
  assert.ok(Effect.runSync(builtinDensities()).length >= 0);
});

test("unknown devices fail with a hint to calibrate", () => {
  const e = Effect.runSync(Effect.flip(builtinProfile("tpu-v9")));
  assert.equal(e.reason, "unknown-device");
  assert.match(e.hint, /calibrate/);
  const f = Effect.runSync(Effect.flip(builtinProfileFor({ backend: "wgpu", name: "Imaginary GPU" })));
  assert.equal(f.reason, "unknown-device");
  assert.match(f.hint, /calibrate/);
});
