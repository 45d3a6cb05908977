// Validates a JSON array of state machine definitions read from stdin with asl-validator;
// prints a JSON array of {isValid, errors} in the same order.
const validate = require("asl-validator");
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map((definition) => {
    const { isValid, errors } = validate(definition);
    return { isValid, errors: errors.map((e) => e.message || JSON.stringify(e)) };
  });
  process.stdout.write(JSON.stringify(results));
});
