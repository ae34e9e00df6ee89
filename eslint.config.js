// A small rule set, each rule here for a reason the compiler does not cover.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'bench/*.c'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      // the policy, protocol and store promise "no any"; elsewhere an escape hatch must be explicit
      '@typescript-eslint/no-explicit-any': 'error',
      // a promise nobody awaits loses its error: in a daemon that is a silent failure
      // (node:test's describe/it return promises the runner itself tracks)
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] }] },
      ],
      // `if (promise)` is always true
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      // unused names are noise a reader has to check; an underscore marks a deliberate one
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // == hides type confusions (the wire gives strings, the store numbers); x != null is the
      // one idiom kept, for null-or-undefined
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      // a switch on a verdict must not fall into the next case by accident
      'no-fallthrough': 'error',
    },
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
  },
);
