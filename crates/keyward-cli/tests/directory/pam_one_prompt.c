/* A test-only PAM module for directory_users.rs step 5d: it asks one question and accepts any
 * answer. Argument `visible`: the question is shown as typed (PAM_PROMPT_ECHO_ON, as a user-name
 * prompt or a one-time code shown on screen would be); otherwise it is hidden
 * (PAM_PROMPT_ECHO_OFF, as a password prompt is). A conversation that refuses the question
 * fails the module with the conversation's own error, so the refusal names its cause. */
#include <stdlib.h>
#include <string.h>
#include <security/pam_ext.h>
#include <security/pam_modules.h>

int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    int style = PAM_PROMPT_ECHO_OFF;
    char *answer = NULL;
    (void)flags;
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "visible") == 0)
            style = PAM_PROMPT_ECHO_ON;
    int rc = pam_prompt(pamh, style, &answer, style == PAM_PROMPT_ECHO_ON ? "Code: " : "Secret: ");
    if (answer != NULL) {
        memset(answer, 0, strlen(answer));
        free(answer);
    }
    return rc;
}

int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    (void)pamh; (void)flags; (void)argc; (void)argv;
    return PAM_SUCCESS;
}
