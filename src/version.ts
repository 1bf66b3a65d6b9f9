/** eqz's version, written into every file as `eqz.producer`. Kept equal to package.json's (a test checks). */
export const VERSION = '0.1.0';
