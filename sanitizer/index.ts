// The public face of the sanitizer: checkers that watch the streams and report violated
// contracts (DESIGN.md "Sanitizer"). The checkers land with the sanitizer issue.
export {};
