/* A test shared object that exports no toll_plugin_entry. */

int toll_plugin_entry_misspelt(void);


int
toll_plugin_entry_misspelt(void)
{
    return 0;
}
